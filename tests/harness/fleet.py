"""Three simulated nodes kvm1, kvm2 and kvm3 of the group kvm_nodes on this
machine, for whole-fleet playbooks (playbooks/maintain.yml): each node its own
run_dir (host variable kvm_run_dir) and TLS credentials, a local connection,
the migration address 127.0.0.1, and kvm_memory_limit_mb where given, so
placement is deterministic (every node shares this machine's memory).

    fleet = Fleet(limits={'kvm1': 1000, 'kvm2': 800, 'kvm3': 600})
    fleet.start_guests({'vm-a': ('kvm1', image, 32)})
    fleet.where()         # {'vm-a': ('kvm1', pid)}
    fleet.destroy()
"""
import json
import os
import sys

from tests.harness.ansible_run import run_playbook, write_playbook
from tests.harness.nodes import LocalNodes, free_port_range
from tests.harness.qemu_procs import qemu_processes_under

HOSTS = ('kvm1', 'kvm2', 'kvm3')


class Fleet(LocalNodes):
    """kvm1, kvm2 and kvm3 on this machine, in one inventory (self.inventory)."""

    def __init__(self, limits=None, hosts=HOSTS):
        super().__init__(hosts)
        self.hosts = tuple(hosts)
        self.ports = free_port_range(start=48000, stop=56000)
        self.base = self.nodes[self.hosts[0]].base
        self.inventory = os.path.join(self.base, 'fleet.yml')
        entries = {}
        for host, node in self.nodes.items():
            entries[host] = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
                             'kvm_run_dir': node.run_dir, 'kvm_state_dir': node.state_dir,
                             'kvm_migration_address': '127.0.0.1',
                             'kvm_tls_dir': self.tls_dir(host)}
            if host in (limits or {}):
                entries[host]['kvm_memory_limit_mb'] = limits[host]
        with open(self.inventory, 'w') as handle:
            json.dump({'kvm_nodes': {'hosts': entries}}, handle, indent=1)    # JSON is YAML

    def start_guests(self, guests):
        """guests: {name: (host, image, memory_mb[, state])}, started (or in the
        state given) under TCG in one playbook run; where they run then."""
        items = [{'name': name, 'host': spec[0], 'disk': spec[1], 'memory': spec[2],
                  'state': (spec[3:] or ('started',))[0],
                  'run_dir': self.run_dir(spec[0]), 'state_dir': self.state_dir(spec[0])}
                 for name, spec in sorted(guests.items())]
        book = write_playbook(os.path.join(self.base, 'start.yml'), hosts='localhost', tasks=[{
            'name': 'start the guests',
            'hvops.kvm.kvm_instance': {
                'name': '{{ item.name }}', 'run_dir': '{{ item.run_dir }}', 'state_dir': '{{ item.state_dir }}',
                'memory': '{{ item.memory }}',
                'accel': 'tcg', 'machine': 'pc', 'state': '{{ item.state }}',
                'disks': [{'path': '{{ item.disk }}', 'interface': 'ide'}]},
            'delegate_to': '{{ item.host }}',
            'loop': items}])
        done = run_playbook(self.inventory, book)
        assert done.rc == 0, done
        return self.where()

    def play(self, playbook, check=False, **extra):
        """ansible-playbook PLAYBOOK on the fleet's inventory, the migration ports a free range."""
        extra_vars = {'migrate_ports': '%d-%d' % self.ports}
        extra_vars.update(extra)
        return run_playbook(self.inventory, playbook, check=check, extra_vars=extra_vars, timeout=900)

    def where(self):
        """{instance: (host, pid)} of every live QEMU under the run_dirs; fails on two copies."""
        found = {}
        for host in self.hosts:
            for pid, argv in qemu_processes_under(self.run_dir(host)):
                name = os.path.basename(argv[argv.index('-pidfile') + 1])[:-len('.pid')]
                assert name not in found, 'two copies of %s: %s and %s' % (name, found[name], (host, pid))
                found[name] = (host, pid)
        return found

    def serial(self, host, name):
        return os.path.join(self.run_dir(host), 'ctrl', name + '.serial')


# A reboot, simulated for the nodes of a Fleet (a maintain_tasks file for
# playbooks/maintain.yml, as a list of tasks): it fails when a QEMU is still
# under the node's run_dir (a reboot would kill it: the walk must have moved
# every guest away), then removes the run_dir, as a tmpfs is at boot.
SIMULATED_REBOOT = [
    {'name': 'Look for guests a reboot would kill',
     'hvops.kvm.kvm_node_facts': {'run_dir': '{{ kvm_run_dir }}', 'state_dir': '{{ kvm_state_dir }}',
                                  'gather_subset': ['instances']},
     'register': 'simulated_reboot_seen'},
    {'name': 'Refuse to reboot a node that still runs a guest',
     'ansible.builtin.assert': {
         'that': ["simulated_reboot_seen.ansible_facts.kvm_node.instances.values() | selectattr('pid', 'ne', none)"
                  " | list | length == 0"],
         'fail_msg': 'a reboot would kill a guest'}},
    {'name': 'Simulate a reboot (the run_dir is a tmpfs)',
     'ansible.builtin.file': {'path': '{{ kvm_run_dir }}', 'state': 'absent'}},
]


def write_task_file(path, tasks):
    """A task file (JSON is YAML) for include_tasks; returns path."""
    with open(path, 'w') as handle:
        json.dump(tasks, handle, indent=1)
    return path
