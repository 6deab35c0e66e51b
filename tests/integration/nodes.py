"""A simulated KVM node for tests: its own run_dir and a local inventory."""
import os
import shutil
import tempfile

from ansible_run import ansible_env, write_local_inventory
from qemu_procs import kill_qemu_under


class LocalNode:
    """One node reached with ansible_connection=local. Its run_dir lives under
    a short /tmp path so socket paths stay within the 107-byte limit, and does
    not exist until a module creates it."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix='hk-', dir='/tmp')
        self.run_dir = os.path.join(self.base, 'run')
        self.inventory = write_local_inventory(os.path.join(self.base, 'inventory.ini'))

    def env(self, extra=None):
        return ansible_env(extra)

    def snapshot(self):
        """Every path under run_dir with its size and mtime, plus live QEMU pids."""
        from qemu_procs import qemu_processes_under
        files = []
        for root, dirs, names in os.walk(self.run_dir):
            for entry in sorted(dirs + names):
                path = os.path.join(root, entry)
                stat = os.lstat(path)
                files.append((path, stat.st_size, stat.st_mtime_ns))
        return sorted(files), [pid for pid, _argv in qemu_processes_under(self.run_dir)]

    def destroy(self):
        kill_qemu_under(self.run_dir)
        shutil.rmtree(self.base, ignore_errors=True)
