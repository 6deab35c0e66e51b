"""Simulated KVM nodes for tests: each its own run_dir, reached with a local
connection. Pair: hosts src and dst with a guest's disk both see."""
import atexit
import os
import random
import shutil
import socket
import sys

from tests.harness.ansible_run import ansible_env, run_adhoc, state_dir_of, write_local_inventory
from tests.harness.qemu_procs import kill_qemu_under, qemu_processes_under
from tests.harness.system import give_to_qemu, reachable_dir
from tests.harness.tls_pki import Pki


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
        self.state_dir = state_dir_of(self.run_dir)
        self.inventory = write_local_inventory(os.path.join(self.base, 'inventory.ini'))

    def env(self, extra=None):
        return ansible_env(extra)

    def snapshot(self):
        """Every path under run_dir and state_dir with its size and mtime, plus live QEMU pids."""
        files = []
        for root, dirs, names in [entry for top in (self.run_dir, self.state_dir) for entry in os.walk(top)]:
            for entry in sorted(dirs + names):
                path = os.path.join(root, entry)
                stat = os.lstat(path)
                files.append((path, stat.st_size, stat.st_mtime_ns))
        return sorted(files), [pid for pid, _argv in qemu_processes_under(self.run_dir)]

    def destroy(self):
        kill_qemu_under(self.run_dir)
        shutil.rmtree(self.base, ignore_errors=True)    # state_dir too: it lies in base

    def instance_files(self):
        """Files of instances under run_dir, as SUBDIR/NAME (lock/ aside), then
        those under state_dir, as guests/NAME."""
        found = []
        for top, sub in [(self.run_dir, sub) for sub in INSTANCE_SUBDIRS] + [(self.state_dir, 'guests')]:
            path = os.path.join(top, sub)
            if os.path.isdir(path):
                found += [os.path.join(sub, entry) for entry in sorted(os.listdir(path))]
        return found


_PKI = {}


def tls_dir(host):
    """TLS credentials of a simulated node named host (CN=host, IP 127.0.0.1),
    as the kvm_node role lays them out, from one CA for the whole test run."""
    if 'pki' not in _PKI:
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

    def state_dir(self, host):
        return self.nodes[host].state_dir

    def files(self, host):
        return self.nodes[host].instance_files()

    def snapshots(self):
        return [node.snapshot() for node in self.nodes.values()]

    def destroy(self):
        for node in self.nodes.values():
            node.destroy()


class Pair(LocalNodes):
    """Two simulated nodes, src and dst, in one inventory, and the disk of
    instance vm1 where both see it."""

    MIGRATE = 'hvops.kvm.kvm_migrate'
    INSTANCE = 'hvops.kvm.kvm_instance'

    def __init__(self):
        super().__init__(('src', 'dst'))
        self.inventory = os.path.join(self.nodes['src'].base, 'pair.ini')
        with open(self.inventory, 'w') as handle:
            for host, role, peer in (('src', 'source', 'dst'), ('dst', 'target', 'src')):
                handle.write('%s ansible_connection=local ansible_python_interpreter=%s run_dir=%s'
                             ' state_dir=%s migration_role=%s peer=%s\n'
                             % (host, sys.executable, self.nodes[host].run_dir, self.nodes[host].state_dir,
                                role, peer))
        self.disk = os.path.join(self.nodes['src'].base, 'vm1.img')

    def run(self, host, args, check=False, module=MIGRATE):
        """(rc, result) of an ad-hoc run of module on host."""
        args = dict(args, run_dir=self.run_dir(host))
        args.setdefault('name', 'vm1')
        done = run_adhoc(self.inventory, module, args, host=host, check=check)
        return done.rc, done.result(host=host)

    def ok(self, host, args, **kw):
        rc, result = self.run(host, args, **kw)
        assert rc == 0, result
        return result

    def refused(self, host, args, words, **kw):
        rc, result = self.run(host, args, **kw)
        assert rc != 0, result
        assert words in result['msg'], result['msg']
        return result

    def pids(self, host):
        return [pid for pid, _argv in qemu_processes_under(self.run_dir(host))]

    def start_guest(self, image, memory=32):
        """Boot the test guest on src through kvm_instance; the disk lies where
        both nodes see it (shared storage)."""
        shutil.copyfile(image, self.disk)
        give_to_qemu(self.disk)
        return self.ok('src', {'memory': memory, 'accel': 'tcg', 'machine': 'pc', 'state': 'started',
                               'disks': [{'path': self.disk, 'interface': 'ide'}]}, module=self.INSTANCE)

    def prepare_and_accept(self, **accept_args):
        prepared = self.ok('src', {'phase': 'prepare'})
        args = {'phase': 'accept', 'runtime': prepared['runtime'], 'definition': prepared['definition']}
        args.update(accept_args)
        return prepared, self.ok('dst', args)

    def serial(self, host):
        return os.path.join(self.run_dir(host), 'ctrl', 'vm1.serial')


PORT_RANGE_SIZE = 16


def tcp_sockets(low, high):
    """[(local port, remote port, state)] of the TCP sockets of this network
    namespace with either port in low..high, TIME_WAIT aside (the kernel's
    leftover of a closed connection, owned by no process)."""
    found = []
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, state = int(fields[1].rsplit(':', 1)[1], 16), int(fields[2].rsplit(':', 1)[1], 16), fields[3]
            if state != '06' and (low <= local <= high or low <= remote <= high):
                found.append((local, remote, state))
    return found


def tcp_ports_in_use(low, high):
    """Ports in low..high that a TCP socket of this network namespace uses
    (locally or as its peer), TIME_WAIT aside."""
    return set(port for local, remote, _state in tcp_sockets(low, high) for port in (local, remote)
               if low <= port <= high)


def free_port_range(size=PORT_RANGE_SIZE, start=40000, stop=48000):
    """low, high of size ports from start..stop that no socket of this machine
    uses (the roles' default range is left to other runs at the same time)."""
    for _attempt in range(50):
        low = random.randrange(start, stop, size)
        if not tcp_ports_in_use(low, low + size - 1):
            return low, low + size - 1
    raise AssertionError('no free port range found')


def free_port():
    """A TCP port of 127.0.0.1 that no socket uses just now."""
    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    return port
