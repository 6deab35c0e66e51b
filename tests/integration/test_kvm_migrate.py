"""kvm_migrate through real ansible runs: two simulated hosts (two run_dirs,
inventory hosts src and dst, both ansible_connection=local) on this machine,
real QEMU (TCG) booting the test guest of tests/guest, migrating over loopback.

Every QEMU a test starts lives under one of the two run_dirs and is killed at
teardown (stopped ones are continued first).
"""
import os
import shutil
import signal
import socket
import threading
import time

import pytest

from tests.harness.ansible_run import run_playbook
from tests.harness.nodes import Pair, free_port
from tests.harness.qemu_procs import assert_ticks_continue, ticks, wait_until
from tests.harness.system import give_to_qemu, require_binary

from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession

INSTANCE = 'hvops.kvm.kvm_instance'
HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATE_BOOK = os.path.join(HERE, 'playbooks', 'kvm_migrate.yml')
RECOVER_BOOK = os.path.join(HERE, 'playbooks', 'kvm_migrate_recover.yml')


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)


@pytest.fixture
def pair():
    made = Pair()
    yield made
    made.destroy()


def query_migrate(host_pair, host):
    with QmpSession(os.path.join(host_pair.run_dir(host), 'ctrl', 'vm1.qmp')) as qmp:
        return qmp.execute('query-migrate')


# -- the whole migration --------------------------------------------------------------------
def test_a_running_guest_migrates_there_and_back(pair, guest_image):
    started = pair.start_guest(guest_image('normal'))
    before = ticks(pair.serial('src'))

    # Check mode on the target: every check runs, nothing is created.
    prepared = pair.ok('src', {'phase': 'prepare'})
    assert prepared['changed'] is False and prepared['pid'] == started['pid']
    assert prepared['requirements']['memory_mb'] == 32
    assert prepared['requirements']['machine'].startswith('pc-i440fx-')
    assert prepared['requirements']['files'] == [pair.disk]
    predicted = pair.ok('dst', {'phase': 'accept', 'runtime': prepared['runtime']}, check=True)
    assert predicted['changed'] is True and predicted['actions'] == ['start_incoming', 'listen']
    assert not os.path.exists(pair.run_dir('dst')) and pair.pids('dst') == []

    # A busy first port of the range: the next one is used.
    busy = socket.socket()
    busy.bind(('127.0.0.1', free_port()))
    busy.listen(1)
    first = busy.getsockname()[1]
    try:
        play = run_playbook(pair.inventory, MIGRATE_BOOK, extra_vars={
            'migrate_from': 'src', 'migrate_to': 'dst', 'instance': 'vm1',
            'migration_ports': '%d-%d' % (first, first + 8)})
    finally:
        busy.close()
    assert play.rc == 0, play
    accepted, finalized = play.result(0, host='dst'), play.result(1, host='dst')
    migrated, confirmed = play.result(1, host='src'), play.result(2, host='src')
    assert accepted['busy_ports'][0] == first and accepted['port'] > first
    assert accepted['uri'] == 'tcp:127.0.0.1:%d' % accepted['port']
    assert migrated['status'] == 'completed', migrated
    stats = migrated['stats']
    assert stats['total_time_ms'] > 0 and stats['downtime_ms'] is not None
    assert stats['transferred_bytes'] > 0 and stats['passes'] >= 1 and stats['setup_time_ms'] is not None
    assert migrated['parameters']['max-bandwidth'] > 128 * 1024 * 1024
    assert migrated['capabilities']['events'] is True
    assert finalized['actions'] == ['define', 'write_runtime', 'resume'] and finalized['state'] == 'running'
    assert confirmed['actions'] == ['kill', 'undefine']

    # Exactly one QEMU, on the target, running, with the source's files gone.
    assert pair.pids('src') == []
    assert pair.pids('dst') == [accepted['pid']]
    assert pair.files('src') == []
    assert_ticks_continue(before, pair.serial('dst'), within_s=60)
    there = pair.ok('dst', {'state': 'started'}, module=INSTANCE)
    assert there['changed'] is False and there['state'] == 'running' and there['pid'] == accepted['pid']
    assert '-incoming' not in there['argv'] and there['definition']['memory'] == 32
    assert there['argv'][there['argv'].index('-machine') + 1] == \
        started['argv'][started['argv'].index('-machine') + 1]
    timing = migrated['timing']
    print('\nmigration of an idle 32 MiB guest: total %s ms, downtime %s ms, setup %s ms, %s bytes;'
          ' completion seen %s ms and phase done %s ms after QEMU\'s event'
          % (stats['total_time_ms'], stats['downtime_ms'], stats['setup_time_ms'],
             stats['transferred_bytes'], timing['completion_seen_after_ms'], timing['returned_after_ms']))
    assert timing['completion_seen_after_ms'] is not None and timing['completion_seen_after_ms'] < 100

    # And back, tuned: multifd, xbzrle and auto-converge on both ends.
    before = ticks(pair.serial('dst'))
    back = run_playbook(pair.inventory, MIGRATE_BOOK, extra_vars={
        'migrate_from': 'dst', 'migrate_to': 'src', 'instance': 'vm1',
        'tuning': {'multifd': True, 'multifd_channels': 3, 'xbzrle': True, 'auto_converge': True}})
    assert back.rc == 0, back
    migrated = back.result(1, host='dst')
    assert migrated['status'] == 'completed'
    assert migrated['capabilities']['multifd'] and migrated['capabilities']['xbzrle']
    assert migrated['parameters']['multifd-channels'] == 3
    assert migrated['stats']['multifd_bytes'] > 0
    assert pair.pids('dst') == [] and pair.files('dst') == []
    assert len(pair.pids('src')) == 1
    assert_ticks_continue(before, pair.serial('src'), within_s=60)


# -- faults -----------------------------------------------------------------------------------
def test_target_killed_mid_migration_leaves_the_guest_running_on_the_source(pair, guest_image):
    pair.start_guest(guest_image('dirty', dirty_mib=48), memory=64)
    before = ticks(pair.serial('src'))
    _prepared, accepted = pair.prepare_and_accept()
    outcome = []
    migration = threading.Thread(target=lambda: outcome.append(pair.run('src', {
        'phase': 'migrate', 'uri': accepted['uri'], 'max_bandwidth_mib': 8})))
    migration.start()
    try:
        wait_until(lambda: query_migrate(pair, 'dst').get('status') == 'active', 30)
        time.sleep(0.5)
        os.kill(accepted['pid'], signal.SIGKILL)
    finally:
        migration.join(120)
    rc, failed = outcome[0]
    assert rc != 0 and 'did not complete' in failed['msg'], failed
    assert failed['status'] == 'failed' and failed['source_run_state'] == 'running'
    assert failed['stats']['transferred_bytes'] > 0
    wait_until(lambda: pair.pids('dst') == [], 10)

    finalized = pair.ok('dst', {'phase': 'finalize', 'success': False})
    assert finalized['target_dead'] is True and finalized['actions'] == ['clean']
    assert pair.files('dst') == []
    confirmed = pair.ok('src', {'phase': 'confirm', 'success': False,
                                'target_confirmed_dead': finalized['target_dead']})
    assert confirmed['changed'] is False and confirmed['state'] == 'running'
    assert len(pair.pids('src')) == 1
    assert_ticks_continue(before, pair.serial('src'), within_s=60)


def test_stalled_target_is_cancelled_and_so_is_a_slow_migration(pair, guest_image):
    pair.start_guest(guest_image('dirty', dirty_mib=48), memory=64)
    before = ticks(pair.serial('src'))

    _prepared, accepted = pair.prepare_and_accept()
    os.kill(accepted['pid'], signal.SIGSTOP)
    try:
        started = time.monotonic()
        stalled = pair.refused('src', {'phase': 'migrate', 'uri': accepted['uri'], 'stall_timeout': 2},
                               'no progress for 2 s')
        assert time.monotonic() - started < 30
        # migrate_cancel shuts the socket down; QEMU's blocked write may see that first.
        assert stalled['reason'] == 'stalled' and stalled['status'] in ('cancelled', 'failed')
        assert stalled['source_run_state'] == 'running'
    finally:
        os.kill(accepted['pid'], signal.SIGCONT)
    assert pair.ok('dst', {'phase': 'finalize', 'success': False})['target_dead'] is True
    assert pair.pids('dst') == [] and pair.files('dst') == []

    # Progressing, but not done within the overall timeout.
    _prepared, accepted = pair.prepare_and_accept()
    slow = pair.refused('src', {'phase': 'migrate', 'uri': accepted['uri'], 'max_bandwidth_mib': 4,
                                'timeout': 3}, 'not done within the timeout of 3 s')
    assert slow['reason'] == 'timeout' and slow['status'] in ('cancelled', 'failed')
    assert slow['source_run_state'] == 'running'
    assert pair.ok('dst', {'phase': 'finalize', 'success': False})['target_dead'] is True
    assert pair.pids('dst') == [] and pair.files('dst') == []
    assert len(pair.pids('src')) == 1
    assert_ticks_continue(before, pair.serial('src'), within_s=60)


def test_a_frozen_target_is_killed_only_on_the_sources_evidence(pair, guest_image):
    """A target QEMU whose monitor is silent (SIGSTOP) is killed by
    finalize(success: false) only with the source's status (peer_status)
    showing the migration cancelled or failed and the source copy running; a
    silent copy that is not an incoming migration target never."""
    pair.start_guest(guest_image('dirty', dirty_mib=48), memory=64)
    before = ticks(pair.serial('src'))
    _prepared, accepted = pair.prepare_and_accept()
    os.kill(accepted['pid'], signal.SIGSTOP)
    stalled = pair.refused('src', {'phase': 'migrate', 'uri': accepted['uri'], 'stall_timeout': 1},
                           'no progress for 1 s')
    assert stalled['status'] in ('cancelled', 'failed') and stalled['source_run_state'] == 'running'
    source = pair.ok('src', {'phase': 'status'})
    assert source['kind'] == 'running' and source['migration_status'] == stalled['status']
    target = pair.ok('dst', {'phase': 'status'})
    assert target['kind'] == 'unknown' and target['incoming'] is True and 'is stopped' in target['error']

    # No evidence, or evidence that the target may hold the whole guest: refused, untouched.
    for peer in (None, dict(source, migration_status='completed'), dict(source, present='yes'),
                 dict(source, run_state='postmigrate'), dict(source, busy=True)):
        args = {'phase': 'finalize', 'success': False}
        if peer is not None:
            args['peer_status'] = peer
        pair.refused('dst', args, 'refusing to kill it')
        assert pair.pids('dst') == [accepted['pid']]
    refused = pair.refused('dst', {'phase': 'recover', 'role': 'target', 'peer_status': dict(
        source, migration_status='completed')}, 'cannot decide')
    assert 'target copy is unknown' in refused['msg'] and pair.pids('dst') == [accepted['pid']]

    # A silent copy that is the guest itself (not started with -incoming): never.
    guest = pair.pids('src')[0]
    os.kill(guest, signal.SIGSTOP)
    try:
        pair.refused('src', {'phase': 'finalize', 'success': False, 'peer_status': source},
                     'not an unfinalized migration target')
    finally:
        os.kill(guest, signal.SIGCONT)

    # recover on the same evidence (finalize's kill: test_migration_faults, through the role).
    killed = pair.ok('dst', {'phase': 'recover', 'role': 'target', 'local_status': target, 'peer_status': source})
    assert killed['decision'] == 'source' and 'never received the whole guest' in killed['reason'], killed
    assert killed['actions'] == ['discard'] and killed['silent'] is True and killed['state'] == 'absent'
    assert pair.pids('dst') == [] and pair.files('dst') == []
    kept = pair.ok('src', {'phase': 'recover', 'role': 'source', 'local_status': source, 'peer_status': target})
    assert kept['decision'] == 'source' and kept['actions'] == [] and kept['state'] == 'running', kept
    assert pair.pids('src') == [guest]
    assert_ticks_continue(before, pair.serial('src'), within_s=60)


def test_a_complete_target_is_not_killed_when_the_source_copy_is_gone(pair, guest_image):
    """The migration completed, then the source copy died before finalize: the
    target holds the only copy of the guest, and a rollback must not kill it."""
    pair.start_guest(guest_image('normal'))
    _prepared, accepted = pair.prepare_and_accept()
    migrated = pair.ok('src', {'phase': 'migrate', 'uri': accepted['uri']})
    assert migrated['status'] == 'completed', migrated
    for pid in pair.pids('src'):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pair.pids('src') == [], 10)
    gone = pair.ok('src', {'phase': 'status'})
    assert gone['present'] is False, gone
    refused = pair.refused('dst', {'phase': 'finalize', 'success': False, 'peer_status': gone},
                           'this copy is the only one of the guest; refusing to kill it')
    assert 'target_dead' not in refused
    assert pair.pids('dst') == [accepted['pid']]
    finalized = pair.ok('dst', {'phase': 'finalize', 'success': True})
    assert finalized['state'] == 'running' and pair.pids('dst') == [accepted['pid']]
    ticks(pair.serial('dst'))


def test_a_target_that_cannot_take_the_guest_refuses_before_starting_anything(pair, guest_image):
    pair.start_guest(guest_image('normal'))
    prepared = pair.ok('src', {'phase': 'prepare'})
    runtime = prepared['runtime']
    accept = {'phase': 'accept', 'runtime': runtime}

    pair.refused('dst', dict(accept, memory_margin_mb=10 ** 9), 'not enough memory')
    missing = dict(runtime, spec=dict(runtime['spec'], disks=[
        dict(runtime['spec']['disks'][0], path=os.path.join(pair.nodes['dst'].base, 'missing.img'))]))
    pair.refused('dst', dict(accept, runtime=missing), 'missing.img) does not exist')
    pair.refused('dst', dict(accept, migration_address='localhost'), 'migration_address')
    pair.refused('dst', dict(accept, migration_ports='70000'), 'migration_ports')
    pair.refused('dst', dict(accept, runtime=dict(runtime, format=99)), 'runtime must be')
    pair.refused('dst', dict(accept, name='vm2'), 'runtime is that of instance')
    assert not os.path.exists(pair.run_dir('dst')), 'a refused accept created files'
    pair.refused('src', {'phase': 'migrate', 'uri': 'exec:touch /tmp/hvops-pwned'}, 'tcp:HOST:PORT')

    # An instance of that name already runs on the target.
    other = os.path.join(pair.nodes['dst'].base, 'other.img')
    shutil.copyfile(pair.disk, other)
    give_to_qemu(other)
    resident = pair.ok('dst', {'memory': 32, 'accel': 'tcg', 'machine': 'pc', 'state': 'paused',
                               'disks': [{'path': other, 'interface': 'ide'}]}, module=INSTANCE)
    before = pair.nodes['dst'].snapshot()
    pair.refused('dst', accept, 'an instance named vm1 is paused there (pid %d)' % resident['pid'])
    assert pair.nodes['dst'].snapshot() == before
    assert pair.pids('src') == [prepared['pid']]


def test_the_source_resumes_only_once_the_target_is_dead(pair, guest_image):
    pair.start_guest(guest_image('normal'))
    before = ticks(pair.serial('src'))
    _prepared, accepted = pair.prepare_and_accept()
    # Check mode sends nothing and resumes nothing.
    predicted = pair.ok('src', {'phase': 'migrate', 'uri': accepted['uri'], 'live': False}, check=True)
    assert predicted['actions'] == ['pause', 'set_capabilities', 'set_parameters', 'migrate']
    assert predicted['status'] is None and 'status' not in query_migrate(pair, 'dst')
    assert pair.ok('src', {'phase': 'status'})['run_state'] == 'running'
    migrated = pair.ok('src', {'phase': 'migrate', 'uri': accepted['uri']})
    assert migrated['status'] == 'completed'
    before_dst = pair.nodes['dst'].snapshot()
    predicted = pair.ok('dst', {'phase': 'finalize', 'success': True}, check=True)
    assert predicted['actions'] == ['define', 'write_runtime', 'resume']
    assert pair.nodes['dst'].snapshot() == before_dst
    assert pair.ok('dst', {'phase': 'status'})['kind'] == 'incoming-complete'
    # Only kvm_migrate may resume an unfinalized target; kvm_instance refuses to touch it.
    for state in ('started', 'stopped', 'restarted'):
        pair.refused('dst', {'state': state}, 'migration is under way or unfinished', module=INSTANCE)
    assert pair.ok('dst', {'phase': 'status'})['run_state'] == 'paused'

    # Told nothing about the target: the source stays migrated away.
    pair.refused('src', {'phase': 'confirm', 'success': False}, 'target copy may be alive')
    predicted = pair.ok('src', {'phase': 'confirm', 'success': False, 'target_confirmed_dead': True},
                        check=True)
    assert predicted['actions'] == ['resume']
    assert pair.ok('src', {'phase': 'status'})['run_state'] == 'postmigrate'
    assert pair.pids('dst') == [accepted['pid']]

    finalized = pair.ok('dst', {'phase': 'finalize', 'success': False})
    assert finalized['actions'] == ['kill'] and finalized['target_dead'] is True
    assert pair.pids('dst') == [] and pair.files('dst') == []
    resumed = pair.ok('src', {'phase': 'confirm', 'success': False, 'target_confirmed_dead': True})
    assert resumed['actions'] == ['resume'] and resumed['state'] == 'running'
    assert_ticks_continue(before, pair.serial('src'), within_s=60)
    again = pair.ok('src', {'phase': 'confirm', 'success': False, 'target_confirmed_dead': True})
    assert again['changed'] is False


def test_recover_keeps_exactly_one_copy(pair, guest_image):
    pair.start_guest(guest_image('normal'))
    before = ticks(pair.serial('src'))

    # Cut off after accept: the source keeps the guest, the waiting target goes.
    _prepared, accepted = pair.prepare_and_accept()
    play = run_playbook(pair.inventory, RECOVER_BOOK, extra_vars={'instance': 'vm1'})
    assert play.rc == 0, play
    assert play.result(0, 'dst')['kind'] == 'incoming-partial'
    src, dst = play.result(1, 'src'), play.result(1, 'dst')
    assert src['decision'] == dst['decision'] == 'source'
    assert src['actions'] == [] and dst['actions'] == ['discard']
    assert pair.pids('dst') == [] and pair.files('dst') == []
    assert len(pair.pids('src')) == 1

    # Cut off after a completed migrate: both copies paused; the target, which
    # holds the completed migration, is finalized and the source goes.
    _prepared, accepted = pair.prepare_and_accept()
    assert pair.ok('src', {'phase': 'migrate', 'uri': accepted['uri']})['status'] == 'completed'
    snapshots = [pair.nodes[host].snapshot() for host in ('src', 'dst')]
    predicted = run_playbook(pair.inventory, RECOVER_BOOK, check=True, extra_vars={'instance': 'vm1'})
    assert predicted.rc == 0, predicted
    assert predicted.result(0, 'dst')['kind'] == 'incoming-complete'
    assert predicted.result(1, 'dst')['actions'] == ['define', 'write_runtime', 'resume']
    assert [pair.nodes[host].snapshot() for host in ('src', 'dst')] == snapshots
    play = run_playbook(pair.inventory, RECOVER_BOOK, extra_vars={'instance': 'vm1'})
    assert play.rc == 0, play
    src, dst = play.result(1, 'src'), play.result(1, 'dst')
    assert src['decision'] == dst['decision'] == 'target'
    assert dst['actions'] == ['define', 'write_runtime', 'resume']
    assert src['actions'] == ['discard', 'undefine']
    assert pair.pids('src') == [] and pair.files('src') == []
    assert pair.pids('dst') == [accepted['pid']]
    assert_ticks_continue(before, pair.serial('dst'), within_s=60)

    # Nothing left to do; and the running target is never killed as a failure.
    play = run_playbook(pair.inventory, RECOVER_BOOK, extra_vars={'instance': 'vm1'})
    assert play.rc == 0 and not play.result(1, 'src')['changed'] and not play.result(1, 'dst')['changed']
    pair.refused('dst', {'phase': 'finalize', 'success': False}, 'refusing to kill it')
    assert pair.pids('dst') == [accepted['pid']]
