"""kvm_node_facts through real ansible runs against real QEMU processes.

Guests are started through hvops.kvm.kvm_instance (ad-hoc runs, booting the
test guest of tests/guest) or through the library's Instance class (no disk:
QEMU finds nothing to boot and idles, which is all facts need).
"""
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.harness.ansible_run import run_adhoc, run_playbook
from tests.harness.nodes import LocalNode
from tests.harness.qemu_procs import qemu_processes_under, wait_until
from tests.harness.system import QEMU_USER, give_to_qemu, require_binary

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import resolve as resolve_qemu_user
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import save_definition
from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec

MODULE = 'hvops.kvm.kvm_node_facts'
HERE = os.path.dirname(os.path.abspath(__file__))
PICK_NODE = os.path.join(HERE, 'playbooks', 'pick_node.yml')


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)


@pytest.fixture(scope='module')
def qemu():
    info = _qemu.query_binary(run, _qemu.find_qemu())
    info['pinned'] = _qemu.pin_machine(info, 'pc')
    return info


@pytest.fixture
def node():
    made = LocalNode()
    yield made
    made.destroy()


@pytest.fixture
def foreign_qemu(tmp_path):
    """Start QEMUs that are not ours: their pidfiles lie outside every run_dir."""
    pidfiles = []

    def start(name):
        pidfile = str(tmp_path / ('%s.pid' % name))
        argv = [shutil.which('qemu-system-x86_64'), '-name', name, '-accel', 'tcg', '-m', '16', '-S',
                '-nodefaults', '-display', 'none', '-pidfile', pidfile, '-daemonize']
        subprocess.run(argv, check=True, capture_output=True)
        pidfiles.append(pidfile)
        with open(pidfile) as handle:
            return int(handle.read())

    yield start
    for pidfile in pidfiles:
        try:
            with open(pidfile) as handle:
                os.kill(int(handle.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def start_with_library(node, qemu, name, memory=16, paused=False, incoming=None):
    """Start a tiny diskless guest through Instance, as kvm_instance would."""
    layout = NodeLayout(node.run_dir, node.state_dir)
    spec = normalize_spec(name, {'memory': memory, 'accel': 'tcg', 'machine': qemu['pinned'],
                                 'serial_console': False})
    instance = Instance(layout, name, run, qemu_user=resolve_qemu_user(QEMU_USER))
    argv, _scripts = instance.prepare_argv(spec, qemu['path'], 'tcg', paused=paused, incoming=incoming)
    layout.ensure(instance.qemu_user)
    save_definition(instance.paths, spec)
    return instance.start(argv, spec, 'tcg', qemu_version=qemu['version'], paused=paused)


def start_with_module(node, name, memory=32, state='started', image=None):
    """kvm_instance ad hoc; with ``image`` the guest boots it (copied: one writer per disk)."""
    args = {'name': name, 'run_dir': node.run_dir, 'memory': memory, 'accel': 'tcg', 'machine': 'pc',
            'state': state}
    if image:
        disk = os.path.join(node.base, name + '.img')
        shutil.copyfile(image, disk)
        give_to_qemu(disk)
        args['disks'] = [{'path': disk, 'interface': 'ide'}]
    result = run_adhoc(node.inventory, 'hvops.kvm.kvm_instance', args)
    assert result.rc == 0, result
    return result.result()


def facts(node, check=False, **args):
    args.setdefault('run_dir', node.run_dir)
    result = run_adhoc(node.inventory, MODULE, args, check=check)
    assert result.rc == 0, result
    task = result.result()
    assert task['changed'] is False
    return task['ansible_facts']['kvm_node']


def meminfo():
    values = {}
    with open('/proc/meminfo') as handle:
        for line in handle:
            key, rest = line.split(':', 1)
            values[key] = int(rest.split()[0])
    return values


def proc_uptime_of(pid):
    """Seconds pid has run, from /proc (independently of the library)."""
    with open('/proc/%d/stat' % pid) as handle:
        started = int(handle.read().rsplit(')', 1)[1].split()[19]) / os.sysconf('SC_CLK_TCK')
    with open('/proc/uptime') as handle:
        return float(handle.read().split()[0]) - started


def resident_mb_of(pid):
    with open('/proc/%d/statm' % pid) as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // (1024 * 1024)


def pidfile_pid(node, name):
    with open(os.path.join(node.run_dir, 'pid', name + '.pid')) as handle:
        return int(handle.read())


def test_an_empty_node_ad_hoc_matches_proc_and_touches_nothing(node):
    kvm_node = facts(node)
    assert not os.path.exists(node.run_dir) and not os.path.exists(node.state_dir), 'facts must not create run_dir or state_dir'
    assert kvm_node['run_dir'] == node.run_dir
    assert kvm_node['gather_subset'] == ['agent', 'cpu', 'hypervisor', 'instances', 'memory', 'storage']
    assert kvm_node['instances'] == {}
    assert kvm_node['storage'] == {'filesystems': [], 'missing': []}, 'no instance, no storage_paths'

    memory, proc = kvm_node['memory'], meminfo()
    assert memory['total_mb'] == proc['MemTotal'] // 1024
    assert abs(memory['free_mb'] - proc['MemAvailable'] // 1024) < 256
    assert abs(memory['used_mb'] - (memory['total_mb'] - memory['free_mb'])) <= 1  # each rounded down
    assert memory['committed_mb'] == 0 and memory['guest_resident_mb'] == 0
    assert memory['allocatable_mb'] == memory['free_mb'] and memory['host_used_mb'] == memory['used_mb']

    with open('/proc/cpuinfo') as handle:
        cpuinfo = handle.read()
    cpu = kvm_node['cpu']
    assert cpu['count'] == cpuinfo.count('processor\t:') == os.cpu_count()
    model = [line.split(':', 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith('model name')]
    assert cpu['model'] == (model[0] if model else None)
    flags = set(next(line for line in cpuinfo.splitlines() if line.startswith('flags')).split(':')[1].split())
    assert cpu['virtualization_flags'] == sorted(flags & {'vmx', 'svm'})

    hypervisor = kvm_node['hypervisor']
    usable, _reason = _qemu.kvm_usable()
    assert hypervisor['kvm']['usable'] is usable and hypervisor['accel'] == ('kvm' if usable else 'tcg')
    assert hypervisor['kvm']['present'] is os.path.exists('/dev/kvm')
    version = subprocess.run([shutil.which('qemu-system-x86_64'), '-version'], capture_output=True, text=True,
                             check=True)
    assert hypervisor['qemu']['path'] == shutil.which('qemu-system-x86_64')
    assert hypervisor['qemu']['version_info'] == list(_qemu.parse_version(version.stdout))
    assert hypervisor['qemu']['machine_aliases']['pc'] == hypervisor['qemu']['default_machine']
    assert 'q35' in hypervisor['qemu']['machines']
    assert hypervisor['socat'] == {'present': True, 'path': shutil.which('socat')}
    # On a node with KVM nothing is wrong; without it, only KVM is.
    assert all('TCG' in problem for problem in kvm_node['problems']), kvm_node['problems']
    assert bool(kvm_node['problems']) is not usable


def test_one_running_guest(node, guest_image):
    started = start_with_module(node, 'web', memory=32, image=guest_image('normal'))
    kvm_node = facts(node)
    web = kvm_node['instances']['web']
    assert list(kvm_node['instances']) == ['web']
    assert web['state'] == 'running' and web['run_state'] == 'running'
    assert web['pid'] == started['pid'] == pidfile_pid(node, 'web')
    assert (web['memory_mb'], web['vcpus'], web['accel']) == (32, 1, 'tcg')
    assert web['machine'] == started['definition']['machine']
    assert web['defined'] is True and web['busy'] is False and web['pending_restart'] is False
    assert web['sockets'] == started['sockets']
    assert web['error'] is None
    assert 0 <= proc_uptime_of(web['pid']) - web['uptime_s'] < 30
    assert abs(web['resident_mb'] - resident_mb_of(web['pid'])) <= 16
    memory = kvm_node['memory']
    assert memory['committed_mb'] == 32
    assert memory['guest_resident_mb'] == web['resident_mb']
    assert kvm_node['problems'] == [] or all('TCG' in p for p in kvm_node['problems'])


def test_several_guests_in_every_state_and_a_foreign_qemu_is_ignored(node, qemu, foreign_qemu, guest_image):
    running = start_with_module(node, 'run1', memory=48, image=guest_image('normal'))['pid']
    paused = start_with_library(node, qemu, 'paused1', memory=24, paused=True)
    incoming = start_with_library(node, qemu, 'in1', memory=40, incoming='defer')
    start_with_module(node, 'stopped1', memory=64, state='present')
    crashed = start_with_library(node, qemu, 'crash1', memory=16)
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: crashed not in dict(qemu_processes_under(node.run_dir)), 10)
    # Not ours: same -name as one of ours, but a pidfile outside run_dir.
    stranger = foreign_qemu('run1')

    kvm_node = facts(node)
    instances = kvm_node['instances']
    assert sorted(instances) == ['crash1', 'in1', 'paused1', 'run1', 'stopped1']
    assert stranger not in [i['pid'] for i in instances.values()]
    states = dict((name, (i['state'], i['run_state'])) for name, i in instances.items())
    assert states == {
        'run1': ('running', 'running'),
        'paused1': ('paused', 'prelaunch'),
        'in1': ('incoming', 'inmigrate'),
        'stopped1': ('stopped', None),
        'crash1': ('crashed', None),
    }
    live = dict(qemu_processes_under(node.run_dir))
    assert sorted(live) == sorted([running, paused, incoming])
    for name, pid in (('run1', running), ('paused1', paused), ('in1', incoming)):
        assert instances[name]['pid'] == pid == pidfile_pid(node, name)
        assert '-name' in live[pid] and live[pid][live[pid].index('-name') + 1] == name
        assert 0 <= proc_uptime_of(pid) - instances[name]['uptime_s'] < 60
    assert [instances[n]['memory_mb'] for n in ('run1', 'paused1', 'in1', 'stopped1', 'crash1')] == \
        [48, 24, 40, 64, 16]
    for name in ('stopped1', 'crash1'):
        assert instances[name]['pid'] is None and instances[name]['uptime_s'] is None
    # Committed memory: the live guests only, never the stranger's 16 MiB.
    assert kvm_node['memory']['committed_mb'] == 48 + 24 + 40
    assert any(p.startswith('instance crash1 crashed') for p in kvm_node['problems']), kvm_node['problems']
    assert not any('run1' in p or 'paused1' in p or 'stopped1' in p for p in kvm_node['problems'])
    assert os.path.exists('/proc/%d' % stranger), 'the foreign QEMU was touched'


def test_check_mode_and_gather_subset(node, qemu):
    start_with_library(node, qemu, 'vm1', memory=20, paused=True)
    before = node.snapshot()
    checked = facts(node, check=True)
    assert checked['instances']['vm1']['state'] == 'paused'
    assert node.snapshot() == before

    only_memory = facts(node, gather_subset=['memory'])
    assert sorted(only_memory) == ['gather_subset', 'memory', 'problems', 'run_dir', 'state_dir']
    assert only_memory['memory']['committed_mb'] == 20
    without = facts(node, gather_subset=['!instances', '!hypervisor', '!storage'])
    assert sorted(without) == ['cpu', 'gather_subset', 'memory', 'problems', 'run_dir', 'state_dir']
    pair = facts(node, gather_subset=['cpu', 'instances'])
    assert sorted(pair) == ['cpu', 'gather_subset', 'instances', 'problems', 'run_dir', 'state_dir']

    bad = run_adhoc(node.inventory, MODULE, {'run_dir': node.run_dir, 'gather_subset': ['disks']})
    assert bad.rc != 0 and "unknown gather_subset 'disks'" in bad.result()['msg']
    assert node.snapshot() == before


def statfs(path):
    """(free bytes for unprivileged writers, total bytes) of path's file system, by coreutils' stat -f."""
    done = subprocess.run(['stat', '-f', '--format=%a %b %S', path], capture_output=True, text=True, check=True)
    available, blocks, size = (int(word) for word in done.stdout.split())
    return available * size, blocks * size


def test_storage_facts_cover_the_guests_disks_and_the_paths_asked_for(node, guest_image, tmp_path):
    """Free and total bytes per file system, as coreutils' stat -f sees them;
    a directory that does not exist is listed as missing; bad paths are refused."""
    # Defined, not started: its stored definition names the disk (nothing changes under run_dir meanwhile).
    start_with_module(node, 'web', memory=32, state='present', image=guest_image('normal'))
    images = tmp_path / 'images'
    images.mkdir()
    missing = str(tmp_path / 'not-there')
    before = node.snapshot()
    kvm_node = facts(node, gather_subset=['storage'], storage_paths=[str(images), missing, '/proc'])
    assert sorted(kvm_node) == ['gather_subset', 'problems', 'run_dir', 'state_dir', 'storage']
    storage = kvm_node['storage']
    assert storage['missing'] == [missing]
    by_path = dict((path, entry) for entry in storage['filesystems'] for path in entry['paths'])
    # web's disk lies in node.base; /proc is a file system of its own.
    assert sorted(by_path) == sorted(['/proc', str(images), node.base])
    assert len(storage['filesystems']) == len(set(os.stat(path).st_dev for path in by_path))
    for path, entry in by_path.items():
        assert entry['device'] == os.stat(path).st_dev
        free, total = statfs(path)
        assert entry['total_bytes'] == total
        assert abs(entry['free_bytes'] - free) < 256 << 20, (path, entry, free)
    assert node.snapshot() == before
    # In all, too: the disks' directory with no storage_paths.
    assert [entry['paths'] for entry in facts(node)['storage']['filesystems']] == [[node.base]]

    bad = run_adhoc(node.inventory, MODULE, {'run_dir': node.run_dir, 'storage_paths': ['/srv/../etc']})
    assert bad.rc != 0 and "storage_paths: '/srv/../etc' is not an absolute, normalised path" in bad.result()['msg']
    assert node.snapshot() == before


def test_a_busy_monitor_gives_an_unknown_state_and_memory_facts_never_ask_it(node, qemu):
    pid = start_with_library(node, qemu, 'vm1', memory=20, paused=True)
    qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qmp.connect(os.path.join(node.run_dir, 'ctrl', 'vm1.qmp'))
    try:
        assert b'QMP' in qmp.recv(4096), 'the test holds the monitor'
        started = time.monotonic()
        only_memory = facts(node, gather_subset=['memory'], monitor_timeout=20)
        assert time.monotonic() - started < 15, 'memory facts waited for the monitor'
        assert only_memory['memory']['committed_mb'] == 20
        kvm_node = facts(node, gather_subset=['instances'], monitor_timeout=1)
    finally:
        qmp.close()
    vm1 = kvm_node['instances']['vm1']
    assert vm1['state'] == 'unknown' and vm1['pid'] == pid and vm1['busy'] is False
    assert 'monitor busy' in vm1['error']
    assert any(p.startswith('instance vm1:') for p in kvm_node['problems'])
    assert facts(node, gather_subset=['instances'])['instances']['vm1']['state'] == 'paused'


def test_an_instance_under_operation_is_busy_and_its_monitor_is_not_waited_for(node, qemu):
    start_with_library(node, qemu, 'vm1', memory=20, paused=True)
    lock = os.open(os.path.join(node.run_dir, 'lock', 'vm1.lock'), os.O_RDWR | os.O_CREAT, 0o600)
    qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert facts(node, gather_subset=['instances'])['instances']['vm1']['busy'] is True
        # Another run holds the lock and the monitor (as a migration would).
        qmp.connect(os.path.join(node.run_dir, 'ctrl', 'vm1.qmp'))
        assert b'QMP' in qmp.recv(4096)
        started = time.monotonic()
        kvm_node = facts(node, gather_subset=['instances'], monitor_timeout=30)
        assert time.monotonic() - started < 20, 'waited the full monitor_timeout'
    finally:
        qmp.close()
        os.close(lock)
    vm1 = kvm_node['instances']['vm1']
    assert (vm1['state'], vm1['busy']) == ('unknown', True)
    assert kvm_node['problems'] == [], 'an operation under way is not a problem of the node'
    assert facts(node, gather_subset=['instances'])['instances']['vm1']['busy'] is False


def test_a_stranger_holding_an_instance_pidfile_is_reported_not_trusted(node, qemu, tmp_path):
    start_with_library(node, qemu, 'vm1', memory=16, paused=True)
    pidfile = os.path.join(node.run_dir, 'pid', 'ghost.pid')
    holder = subprocess.Popen([sys.executable, '-c',
                               'import fcntl, os, sys, time\n'
                               'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n'
                               'fcntl.lockf(fd, fcntl.LOCK_EX)\n'
                               'print("locked", flush=True)\n'
                               'time.sleep(60)\n', pidfile], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b'locked'
        kvm_node = facts(node)
        ghost = kvm_node['instances']['ghost']
        assert ghost['state'] == 'unknown' and ghost['pid'] is None
        assert 'refusing to touch it' in ghost['error']
        assert kvm_node['instances']['vm1']['state'] == 'paused'
        assert kvm_node['memory']['committed_mb'] == 16
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_a_playbook_picks_the_node_with_the_most_memory_left(qemu, tmp_path):
    nodes = {'node-a': LocalNode(), 'node-b': LocalNode()}
    try:
        # The same machine, so the same free memory; what differs is what the
        # guests were promised and have not touched (paused at start).
        start_with_library(nodes['node-a'], qemu, 'big', memory=1024, paused=True)
        start_with_library(nodes['node-b'], qemu, 'small', memory=64, paused=True)
        start_with_library(nodes['node-b'], qemu, 'small2', memory=64, paused=True)
        inventory = str(tmp_path / 'inventory.ini')
        with open(inventory, 'w') as handle:
            handle.write('[kvm_nodes]\n')
            for name, made in sorted(nodes.items()):
                handle.write('%s ansible_connection=local ansible_python_interpreter=%s kvm_run_dir=%s'
                             ' kvm_state_dir=%s\n' % (name, sys.executable, made.run_dir, made.state_dir))
        result = run_playbook(inventory, PICK_NODE)
        assert result.rc == 0, result
        # run_once: the pick is reported once, and every host has the fact.
        picked = dict(result.tasks('node-a'))['Pick the node with the most memory left for guests']
        assert picked['ansible_facts']['kvm_picked_node'] == 'node-b'
        for host in nodes:
            shown = dict(result.tasks(host))['Show the pick']['msg']
            assert shown.startswith('node-b has'), shown
        a = dict(result.tasks('node-a'))['Gather the memory facts of each node']['ansible_facts']['kvm_node']
        b = dict(result.tasks('node-b'))['Gather the memory facts of each node']['ansible_facts']['kvm_node']
        assert (a['memory']['committed_mb'], b['memory']['committed_mb']) == (1024, 128)
        assert b['memory']['allocatable_mb'] - a['memory']['allocatable_mb'] > 512
    finally:
        for made in nodes.values():
            made.destroy()


def test_facts_feed_json_consumers(node, qemu):
    """Everything returned is plain JSON (no tuples, no objects)."""
    start_with_library(node, qemu, 'vm1', memory=16, paused=True)
    kvm_node = facts(node)
    assert json.loads(json.dumps(kvm_node)) == kvm_node
