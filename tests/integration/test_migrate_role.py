"""The hvops.kvm.migrate role through playbooks/migrate.yml and recover.yml.

Over loopback: two simulated nodes on this machine (inventory hosts kvm1 and
kvm2, ansible_connection=local, each with its own kvm_run_dir), the test
guest of tests/guest under TCG, its disk where both see it. Over the lab
(marked ``lab``): the two network namespaces of tools/lab.py reached over SSH,
the migration flowing over the veth link between their addresses.

A second run that would move the guest to where it already runs is a no-op:
the role reports no change and says so (migrate_result.moved is false).

Every QEMU a test starts lives under one of the run_dirs and is killed at
teardown (stopped ones are continued first).
"""
import json
import os
import signal
import threading
import time

import pytest

from tests.harness.ansible_run import run_adhoc, run_playbook
from tests.harness.lab import inventory_with_tls
from tests.harness.loopback import (
    HOSTS, INSTANCE_MODULE, MIGRATE_BOOK, NAME, Loopback)
from tests.harness.nodes import tcp_sockets
from tests.harness.qemu_procs import assert_ticks_continue, qemu_processes_under, ticks, wait_until
from tests.harness.system import require_binary
from tests.harness.tls_pki import Pki

from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession

MIGRATE_MODULE = 'hvops.kvm.kvm_migrate'
STAT_KEYS = ('total_time_ms', 'downtime_ms', 'setup_time_ms', 'transferred_bytes', 'throughput_mbps',
             'average_mib_s', 'passes')


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)


# -- looking at the guest and the machine --------------------------------------------------
def tcp_inodes():
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as handle:
            inodes.update(row.split()[9] for row in handle.read().splitlines()[1:])
    return inodes - {'0'}


def socket_inodes(pid):
    found = set()
    fd_dir = '/proc/%d/fd' % pid
    for entry in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, entry))
        except OSError:
            continue
        if target.startswith('socket:['):
            found.add(target[8:-1])
    return found


def processes_mentioning(text):
    """[(pid, argv)] of live processes (this one aside) whose command line mentions text."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = [word.decode(errors='replace') for word in handle.read().split(b'\0')[:-1]]
        except OSError:
            continue
        if any(text in word for word in argv):
            found.append((int(entry), argv))
    return found


# -- playbook results ----------------------------------------------------------------------
def migrate_result(play):
    """The last migrate_result the role set in a run."""
    found = [res['ansible_facts']['migrate_result'] for _name, res in play.tasks()
             if 'migrate_result' in res.get('ansible_facts', {})]
    assert found, play
    return found[-1]


def task_result(play, suffix):
    found = [res for name, res in play.tasks() if name.endswith(suffix)]
    assert found, [name for name, _res in play.tasks()]
    return found[-1]


def play_stats(play):
    return play.data['stats']['localhost']


@pytest.fixture
def loop():
    made = Loopback()
    yield made
    made.destroy()


# -- over loopback ---------------------------------------------------------------------------
def test_the_role_moves_a_running_guest_there_and_back(loop, guest_image):
    started = loop.start_guest(guest_image('normal'), autostart=True, autostart_order=5,
                               restart_policy='on-crash')
    before = ticks(loop.serial('kvm1'))

    there = loop.migrate('kvm1', 'kvm2')
    assert there.rc == 0, there
    result = migrate_result(there)
    assert result['moved'] is True and result['runs_on'] == 'kvm2' and 'failed' not in result
    assert result['uri'].startswith('tcp:127.0.0.1:')
    assert loop.ports[0] <= int(result['uri'].rsplit(':', 1)[1]) <= loop.ports[1]
    stats = result['stats']
    assert sorted(stats) == sorted(STAT_KEYS + ('ram_total_bytes',))
    assert stats['total_time_ms'] > 0 and stats['downtime_ms'] is not None and stats['transferred_bytes'] > 0
    assert stats['throughput_mbps'] is not None and stats['passes'] >= 1
    assert play_stats(there)['changed'] == 4, 'accept, migrate, finalize and confirm'
    # Exactly one QEMU, on kvm2; nothing of the guest left on kvm1: its
    # definition, policy and last state moved with it.
    assert loop.pids('kvm1') == [] and loop.files('kvm1') == []
    assert [name for name in loop.files('kvm2') if name.startswith('guests/')] == [
        'guests/vm1.json', 'guests/vm1.last', 'guests/vm1.policy']
    moved = loop.adhoc('kvm2', INSTANCE_MODULE, {'state': 'started'})
    assert moved['changed'] is False and moved['policy'] == {
        'autostart': True, 'autostart_order': 5, 'autostart_delay': 0, 'restart_policy': 'on-crash'}, moved
    assert loop.pids('kvm2') == [result['pid']] and result['pid'] != started['pid']
    after = assert_ticks_continue(before, loop.serial('kvm2'), within_s=120)
    shown = task_result(there, 'Show the migration')['msg']
    assert shown[0] == result['message'] and shown[1].startswith('runs on kvm2 (pid %d)' % result['pid'])
    assert shown[2] == 'total time %(total_time_ms)s ms, downtime %(downtime_ms)s ms, setup %(setup_time_ms)s ms' % stats
    print('\nloopback kvm1 -> kvm2: %s; whole role %s s' % (json.dumps(stats), result['elapsed_s']))

    # Moving it again to where it runs is a no-op: nothing changes, and it says so.
    snapshots = loop.snapshots()
    again = loop.migrate('kvm1', 'kvm2')
    assert again.rc == 0, again
    noop = migrate_result(again)
    assert noop['moved'] is False and noop['runs_on'] == 'kvm2' and noop['pid'] == result['pid']
    assert noop['stats'] is None and 'already runs on kvm2' in noop['message']
    assert play_stats(again)['changed'] == 0
    assert loop.snapshots() == snapshots

    back = loop.migrate('kvm2', 'kvm1')
    assert back.rc == 0, back
    result = migrate_result(back)
    assert result['moved'] is True and result['runs_on'] == 'kvm1'
    assert loop.pids('kvm2') == [] and loop.files('kvm2') == []
    assert loop.pids('kvm1') == [result['pid']]
    assert_ticks_continue(after, loop.serial('kvm1'), within_s=120)
    assert tcp_sockets(*loop.ports) == []
    for host in HOSTS:
        assert [pid for pid, _argv in processes_mentioning(loop.nodes[host].base) if pid != result['pid']] == []
    print('loopback kvm2 -> kvm1: %s; whole role %s s' % (json.dumps(result['stats']), result['elapsed_s']))

    # recover.yml after an uninterrupted run: nothing to do.
    recovered = loop.recover('kvm2', 'kvm1')
    assert recovered.rc == 0, recovered
    assert play_stats(recovered)['changed'] == 0
    outcome = recovered.result(-2)['ansible_facts']['migrate_recover_result']
    assert outcome['decision'] == 'target' and outcome['runs_on'] == 'kvm1' and outcome['changed'] is False
    assert loop.pids('kvm1') == [result['pid']]


def test_check_mode_stops_after_the_prechecks_and_changes_nothing(loop, guest_image):
    started = loop.start_guest(guest_image('normal'))
    snapshots = loop.snapshots()
    checked = loop.migrate('kvm1', 'kvm2', check=True)
    assert checked.rc == 0, checked
    result = migrate_result(checked)
    assert result['check_mode'] is True and result['moved'] is False and result['runs_on'] == 'kvm1'
    assert result['pid'] == started['pid']
    assert result['message'].startswith('Check mode: vm1 would move from kvm1 to kvm2.')
    assert 'Nothing was changed' in result['message']
    assert 'listening on 127.0.0.1 (ports %d-%d)' % loop.ports in result['message']
    # accept ran its checks in check mode, then the role stopped.
    accepted = task_result(checked, 'Accept the guest on the target (a paused QEMU waiting for it; in check mode'
                                    ' only the checks)')
    assert accepted['actions'] == ['start_incoming', 'load_tls_credentials', 'listen'] and accepted['changed'] is True
    assert accepted['tls'] is True
    for later in ('Migrate from the source', 'Finalize on the target', 'Confirm on the source'):
        assert all(res.get('skipped') for name, res in checked.tasks() if later in name), later
    assert loop.snapshots() == snapshots
    assert loop.pids('kvm2') == [] and loop.pids('kvm1') == [started['pid']]

    # A check that cannot pass says why, and also changes nothing.
    refused = loop.migrate('kvm1', 'kvm2', check=True, migrate_memory_margin_mb=10 ** 9)
    assert refused.rc != 0
    assert 'not enough memory' in task_result(refused, 'in check mode only the checks)')['msg']
    assert loop.snapshots() == snapshots


def test_without_tls_credentials_the_role_refuses_before_anything_moves(loop, guest_image, tmp_path):
    """TLS is the role's default: a target without credentials fails the
    migration at accept, the guest stays where it runs, and nothing is left on
    the target; cleartext needs migrate_tls: false, said explicitly."""
    started = loop.start_guest(guest_image('normal'))
    # An extra variable outranks both nodes' kvm_tls_dir: neither has credentials.
    failed = loop.migrate('kvm1', 'kvm2', kvm_tls_dir=str(tmp_path / 'none'))
    assert failed.rc != 0, failed
    message = task_result(failed, 'Fail with what happened and where the guest runs')['msg']
    assert 'ca-cert.pem is missing' in message and 'kvm_node role makes the TLS credentials' in message, message
    assert message.endswith('vm1 runs on kvm1 (pid %d).' % started['pid']), message
    assert loop.pids('kvm1') == [started['pid']] and loop.pids('kvm2') == [] and loop.files('kvm2') == []
    plain = loop.migrate('kvm1', 'kvm2', migrate_tls=False, kvm_tls_dir=str(tmp_path / 'none'))
    assert plain.rc == 0, plain
    result = migrate_result(plain)
    assert result['moved'] is True and result['tls'] is False
    assert result['message'].endswith('in cleartext'), result['message']


def test_a_failed_migration_is_rolled_back_to_the_source(loop, guest_image):
    # A guest that dirties 48 MiB, at 4 MiB/s: it cannot finish in 2 s.
    started = loop.start_guest(guest_image('dirty', dirty_mib=48), memory=64)
    before = ticks(loop.serial('kvm1'))
    failed = loop.migrate('kvm1', 'kvm2', migrate_max_bandwidth_mib=4, migrate_timeout=2)
    assert failed.rc != 0, failed
    assert play_stats(failed)['rescued'] == 1
    message = task_result(failed, 'Fail with what happened and where the guest runs')['msg']
    assert message.startswith('Migration of vm1 from kvm1 to kvm2 failed in "Migrate from the source"')
    assert 'not done within the timeout of 2 s' in message
    assert message.endswith('Rolled back: the incoming copy on kvm2 was removed, and vm1 runs on kvm1'
                            ' (pid %d).' % started['pid'])
    result = migrate_result(failed)
    assert result['failed'] is True and result['moved'] is False and result['rolled_back'] is True
    assert result['runs_on'] == 'kvm1' and result['pid'] == started['pid']
    assert result['failed_phase'].endswith('Migrate from the source')
    assert result['stats']['transferred_bytes'] > 0
    # The guest runs on the source only; the target has no process and no files.
    assert loop.pids('kvm1') == [started['pid']]
    assert loop.pids('kvm2') == [] and loop.files('kvm2') == []
    before = assert_ticks_continue(before, loop.serial('kvm1'), within_s=120)

    # The target's QEMU killed in the middle of the migration.
    killed = []

    def kill_target():
        qmp = os.path.join(loop.run_dir('kvm2'), 'ctrl', NAME + '.qmp')

        def migrating():
            if not loop.pids('kvm2') or not os.path.exists(qmp):
                return False
            try:
                with QmpSession(qmp) as session:
                    return session.execute('query-migrate').get('status') == 'active'
            except Exception:   # pylint: disable=broad-except
                return False
        wait_until(migrating, 60, interval=0.1)
        time.sleep(0.5)
        pid = loop.pids('kvm2')[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_target, daemon=True)
    killer.start()
    failed = loop.migrate('kvm1', 'kvm2', migrate_max_bandwidth_mib=4, migrate_timeout=120)
    killer.join(10)
    assert killed, 'the target QEMU was never seen migrating'
    assert failed.rc != 0, failed
    message = task_result(failed, 'Fail with what happened and where the guest runs')['msg']
    assert 'did not complete' in message, message
    assert 'Rolled back:' in message and 'vm1 runs on kvm1 (pid %d)' % started['pid'] in message
    assert task_result(failed, 'Roll back on the target (remove the incoming copy)')['actions'] == ['clean']
    assert migrate_result(failed)['runs_on'] == 'kvm1'
    assert loop.pids('kvm1') == [started['pid']]
    assert loop.pids('kvm2') == [] and loop.files('kvm2') == []
    assert_ticks_continue(before, loop.serial('kvm1'), within_s=120)


def test_recover_playbook_after_interrupted_runs(loop, guest_image):
    started = loop.start_guest(guest_image('normal'))
    before = ticks(loop.serial('kvm1'))

    # Cut off after accept: the migrate role refuses and points to recover.yml.
    prepared = loop.phase('kvm1', phase='prepare')
    loop.phase('kvm2', phase='accept', runtime=prepared['runtime'], definition=prepared['definition'])
    refused = loop.migrate('kvm1', 'kvm2')
    assert refused.rc != 0
    message = task_result(refused, 'Refuse what cannot be migrated')['msg']
    assert 'vm1 on kvm2 is the target of an earlier migration that was never finalized' in message
    assert 'playbooks/recover.yml -e instance=vm1 -e source=kvm1 -e target=kvm2' in message

    snapshots = loop.snapshots()
    predicted = loop.recover('kvm1', 'kvm2', check=True)
    assert predicted.rc == 0, predicted
    assert loop.snapshots() == snapshots
    recovered = loop.recover('kvm1', 'kvm2')
    assert recovered.rc == 0, recovered
    outcome = recovered.result(-2)['ansible_facts']['migrate_recover_result']
    assert outcome['decision'] == 'source' and outcome['runs_on'] == 'kvm1'
    assert outcome['hosts']['target']['kind'] == 'incoming-partial'
    assert outcome['hosts']['target']['actions'] == ['discard'] and outcome['hosts']['source']['actions'] == []
    assert loop.pids('kvm2') == [] and loop.files('kvm2') == []
    assert loop.pids('kvm1') == [started['pid']]

    # Cut off after a completed migrate: the target, which holds it, is kept.
    prepared = loop.phase('kvm1', phase='prepare')
    accepted = loop.phase('kvm2', phase='accept', runtime=prepared['runtime'], definition=prepared['definition'])
    assert loop.phase('kvm1', phase='migrate', uri=accepted['uri'])['status'] == 'completed'
    recovered = loop.recover('kvm1', 'kvm2')
    assert recovered.rc == 0, recovered
    outcome = recovered.result(-2)['ansible_facts']['migrate_recover_result']
    assert outcome['decision'] == 'target' and outcome['runs_on'] == 'kvm2' and outcome['changed'] is True
    assert outcome['hosts']['target']['actions'] == ['define', 'write_runtime', 'resume']
    assert outcome['hosts']['source']['actions'] == ['discard', 'undefine']
    assert loop.pids('kvm1') == [] and loop.files('kvm1') == []
    assert loop.pids('kvm2') == [accepted['pid']]
    assert_ticks_continue(before, loop.serial('kvm2'), within_s=120)


def test_twenty_migrations_leave_nothing_behind(loop, guest_image):
    """20 migrations, there and back ten times, through the phases the role
    runs (status on both nodes, prepare, accept, migrate, finalize, confirm),
    in this process for speed."""
    legs = 20
    started = loop.start_guest(guest_image('normal'))
    low, high = loop.ports
    before = ticks(loop.serial('kvm1'))
    files = loop.files('kvm1')
    own_fds = sorted(os.listdir('/proc/self/fd'))
    results = []
    begun = time.monotonic()
    for leg in range(legs):
        source, target = HOSTS if leg % 2 == 0 else HOSTS[::-1]
        assert loop.phase(source, phase='status')['kind'] == 'running'
        assert loop.phase(target, phase='status')['kind'] == 'absent'
        prepared = loop.phase(source, phase='prepare')
        accepted = loop.phase(target, phase='accept', runtime=prepared['runtime'],
                              definition=prepared['definition'])
        assert low <= accepted['port'] <= high
        migrated = loop.phase(source, phase='migrate', uri=accepted['uri'])
        assert migrated['status'] == 'completed'
        finalized = loop.phase(target, phase='finalize', success=True)
        assert finalized['state'] == 'running'
        confirmed = loop.phase(source, phase='confirm', success=True)
        assert confirmed['actions'] == ['kill', 'undefine']
        results.append((target, finalized['pid'], migrated['stats']))
    elapsed = time.monotonic() - begun
    print('\n%d migrations through the phases in %.1f s (%.2f s each); total_time_ms %s, downtime_ms %s'
          % (legs, elapsed, elapsed / legs, sorted(stats['total_time_ms'] for _t, _p, stats in results),
             sorted(stats['downtime_ms'] for _t, _p, stats in results)))
    assert [target for target, _pid, _stats in results] == ['kvm2', 'kvm1'] * (legs // 2)
    assert len(set(pid for _target, pid, _stats in results)) == legs

    # Back on kvm1: exactly one QEMU, with the same files as the first one had.
    final = results[-1][1]
    assert loop.pids('kvm1') == [final] and final != started['pid']
    assert loop.pids('kvm2') == []
    assert loop.files('kvm1') == files and loop.files('kvm2') == []
    for host in HOSTS:
        assert os.listdir(os.path.join(loop.run_dir(host), 'lock')) == [NAME + '.lock']
    # No port of the range listens or is connected; the guest's QEMU holds no
    # TCP socket; this process has the file descriptors it had before.
    assert tcp_sockets(low, high) == []
    assert not socket_inodes(final) & tcp_inodes()
    assert sorted(os.listdir('/proc/self/fd')) == own_fds
    # No other process (a socat left talking to a monitor, say) mentions the run_dirs.
    for host in HOSTS:
        leftovers = [(pid, argv) for pid, argv in processes_mentioning(loop.nodes[host].base) if pid != final]
        assert leftovers == [], leftovers
    assert_ticks_continue(before, loop.serial('kvm1'), within_s=600)


# -- over the two-host lab (fixtures lab and lab_guest: conftest.py) ------------------------
def lab_rx_bytes(lab, host):
    """Bytes received on the node's end of the link between the namespaces."""
    done = lab.run(host.name, ['cat', '/sys/class/net/%s/statistics/rx_bytes' % host.veth])
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def netns_of_path(path):
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def netns_of(pid):
    return netns_of_path('/proc/%d/ns/net' % pid)


@pytest.mark.lab
def test_the_role_migrates_between_the_lab_hosts_over_their_link(lab, lab_guest):
    """Over TLS (the role's default), both ways, as the QEMU user."""
    pki = Pki()
    try:
        check_the_role_over_the_lab(lab, lab_guest, inventory_with_tls(lab, pki))
    finally:
        pki.destroy()


def check_the_role_over_the_lab(lab, lab_guest, inventory):
    host_a, host_b = lab.host('kvm-a'), lab.host('kvm-b')
    started = run_adhoc(inventory, INSTANCE_MODULE, {
        'name': NAME, 'run_dir': host_a.run_dir, 'memory': 32, 'accel': 'tcg', 'machine': 'pc',
        'state': 'started', 'disks': [{'path': lab_guest, 'interface': 'ide'}]}, host='kvm-a')
    assert started.rc == 0, started.result(host='kvm-a')
    pid = started.result(host='kvm-a')['pid']
    assert netns_of(pid) == netns_of_path(host_a.ns_path)
    before = ticks(os.path.join(host_a.run_dir, 'ctrl', NAME + '.serial'))

    for source, target in ((host_a, host_b), (host_b, host_a)):
        received = lab_rx_bytes(lab, target)
        play = run_playbook(inventory, MIGRATE_BOOK, extra_vars={
            'instance': NAME, 'source': source.name, 'target': target.name})
        failures = ['%s: %s' % (name, res.get('msg')) for name, res in play.tasks() if res.get('failed')]
        assert play.rc == 0, '\n'.join(failures)
        result = migrate_result(play)
        assert result['moved'] is True and result['runs_on'] == target.name
        assert result['tls'] is True, 'TLS is the role\'s default'
        with open('/proc/%d/status' % result['pid']) as handle:
            status = handle.read()
        assert 'Seccomp:\t2' in status and '\nUid:\t0\t' not in status
        # QEMU listened on the target's address on the link, and the guest's
        # memory came over the veth (the target's end received at least as much).
        assert result['uri'].startswith('tcp:%s:' % target.address), result['uri']
        assert lab_rx_bytes(lab, target) - received >= result['stats']['transferred_bytes']
        # Exactly one QEMU, in the target's namespace.
        assert qemu_processes_under(source.run_dir) == []
        pids = [found for found, _argv in qemu_processes_under(target.run_dir)]
        assert pids == [result['pid']]
        assert netns_of(result['pid']) == netns_of_path(target.ns_path)
        before = assert_ticks_continue(before, os.path.join(target.run_dir, 'ctrl', NAME + '.serial'),
                                       within_s=120)
        print('\nlab %s -> %s over %s: %s; whole role %s s'
              % (source.name, target.name, result['uri'], json.dumps(result['stats']), result['elapsed_s']))
