"""Two simulated nodes on this machine for the migrate role: inventory hosts
kvm1 and kvm2, each with its own run_dir and state_dir, migrating over
loopback."""
import json
import os
import shutil
import subprocess
import sys

from tests.harness import REPO
from tests.harness.ansible_run import run_adhoc, run_playbook
from tests.harness.nodes import LocalNodes, free_port_range
from tests.harness.qemu_procs import qemu_processes_under
from tests.harness.system import give_to_qemu

from ansible_collections.hvops.kvm.plugins.module_utils._migration import run_phase

INSTANCE_MODULE = 'hvops.kvm.kvm_instance'
MIGRATE_BOOK = os.path.join(REPO, 'playbooks', 'migrate.yml')
RECOVER_BOOK = os.path.join(REPO, 'playbooks', 'recover.yml')
NAME = 'vm1'
HOSTS = ('kvm1', 'kvm2')


def run_argv(argv):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Loopback(LocalNodes):
    """Inventory hosts kvm1 and kvm2 on this machine, each with its own run_dir;
    the guest's disk lies in kvm1's base directory, which both see."""

    def __init__(self):
        super().__init__(HOSTS)
        self.ports = free_port_range()
        self.inventory = os.path.join(self.nodes['kvm1'].base, 'inventory.yml')
        hosts = {host: {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
                        'kvm_run_dir': node.run_dir, 'kvm_state_dir': node.state_dir,
                        'kvm_migration_address': '127.0.0.1', 'kvm_tls_dir': self.tls_dir(host)}
                 for host, node in self.nodes.items()}
        with open(self.inventory, 'w') as handle:
            json.dump({'kvm_nodes': {'hosts': hosts}}, handle, indent=1)    # JSON is YAML
        self.disk = os.path.join(self.nodes['kvm1'].base, 'vm1.img')

    def adhoc(self, host, module, args, ok=True):
        args = dict(args, run_dir=self.run_dir(host), name=NAME)
        done = run_adhoc(self.inventory, module, args, host=host)
        if ok:
            assert done.rc == 0, done.result(host=host)
        return done.result(host=host)

    def phase(self, host, **params):
        """One kvm_migrate phase on host, run in this process through the
        library the module runs (no ansible start-up: fast, and a file
        descriptor the library leaked would stay open here)."""
        params.update(name=NAME, run_dir=self.run_dir(host), state_dir=self.state_dir(host))
        if params['phase'] == 'accept':
            params.setdefault('migration_ports', '%d-%d' % self.ports)
        return run_phase(params, run_argv)

    def start_guest(self, image, memory=32, **policy):
        shutil.copyfile(image, self.disk)
        give_to_qemu(self.disk)
        return self.adhoc('kvm1', INSTANCE_MODULE, dict(policy, **{
            'memory': memory, 'accel': 'tcg', 'machine': 'pc', 'state': 'started',
            'disks': [{'path': self.disk, 'interface': 'ide'}]}))

    def migrate(self, source, target, check=False, **role_vars):
        extra = {'instance': NAME, 'source': source, 'target': target,
                 'migrate_ports': '%d-%d' % self.ports}
        extra.update(role_vars)
        return run_playbook(self.inventory, MIGRATE_BOOK, check=check, extra_vars=extra)

    def recover(self, source, target, check=False):
        return run_playbook(self.inventory, RECOVER_BOOK, check=check,
                            extra_vars={'instance': NAME, 'source': source, 'target': target})

    def pids(self, host):
        return [pid for pid, _argv in qemu_processes_under(self.run_dir(host))]

    def serial(self, host):
        return os.path.join(self.run_dir(host), 'ctrl', NAME + '.serial')
