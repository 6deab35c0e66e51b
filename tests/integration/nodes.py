"""Simulated KVM nodes for tests: each its own run_dir, reached with a local connection."""
import atexit
import os
import shutil

from ansible_run import ansible_env, write_local_inventory
from conftest import reachable_dir
from qemu_procs import kill_qemu_under


# Where an instance's files live under run_dir (lock/ aside: a lock file per
# instance name stays by design).
INSTANCE_SUBDIRS = ('pid', 'ctrl', 'conf')


class LocalNode:
    """One node reached with ansible_connection=local. Its run_dir lives under
    a short /tmp path so socket paths stay within the 107-byte limit, and does
    not exist until a module creates it. The QEMU user can pass through the base
    directory (to its pidfiles in run_dir/pid and to disk images kept there)."""

    def __init__(self):
        self.base = reachable_dir('hk-')
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

    def instance_files(self):
        """Files of instances under run_dir, as SUBDIR/NAME, lock/ aside."""
        found = []
        for sub in INSTANCE_SUBDIRS:
            path = os.path.join(self.run_dir, sub)
            if os.path.isdir(path):
                found += [os.path.join(sub, entry) for entry in sorted(os.listdir(path))]
        return found


_PKI = {}


def tls_dir(host):
    """TLS credentials of a simulated node named host (CN=host, IP 127.0.0.1),
    as the kvm_host role lays them out, from one CA for the whole test run."""
    if 'pki' not in _PKI:
        from tls_pki import Pki  # pylint: disable=import-outside-toplevel
        _PKI['pki'] = Pki()
        _PKI['ca'] = _PKI['pki'].authority('hvops-test-nodes')
        atexit.register(_PKI['pki'].destroy)
    if host not in _PKI:
        _PKI[host] = _PKI['pki'].node(_PKI['ca'], host)
    return _PKI[host]


class LocalNodes:
    """Several simulated nodes by inventory host name."""

    def __init__(self, hosts):
        self.nodes = dict((host, LocalNode()) for host in hosts)

    def tls_dir(self, host):
        return tls_dir(host)

    def run_dir(self, host):
        return self.nodes[host].run_dir

    def files(self, host):
        return self.nodes[host].instance_files()

    def snapshots(self):
        return [node.snapshot() for node in self.nodes.values()]

    def destroy(self):
        for node in self.nodes.values():
            node.destroy()
