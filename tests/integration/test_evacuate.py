"""The hvops.kvm.evacuate role through playbooks/evacuate.yml.

Three simulated nodes on this machine (inventory hosts kvm1, kvm2 and kvm3 of
the group kvm_nodes, ansible_connection=local, each with its own
kvm_run_dir), guests of tests/guest under TCG, each with its own disk copy
where every node sees it. kvm1 is drained to kvm2 and kvm3 over loopback.

All nodes share this machine's memory, so their allocatable memory is the
same: the targets' host variable kvm_memory_limit_mb (400 and 360 MiB) makes
the placement deterministic. With the default margin of 128 MiB per guest,
guests of 64, 48 and 32 MiB need 192, 176 and 160 MiB; biggest first, each on
the target with the most left: 64 -> kvm2 (400), 48 -> kvm3 (360 > 208),
32 -> kvm2 (208 > 184).

With evacuate_storage copy (local disks), the guest's disk lies in a
directory of kvm1's and evacuate_storage_map maps it to a directory of the
targets': the simulated nodes share one file system, and a copy never
overwrites a file.

Every QEMU a test starts lives under one of the run_dirs and is killed at
teardown.
"""
import hashlib
import json
import os
import re
import shutil

import pytest

from tests.harness import REPO
from tests.harness.ansible_run import run_playbook
from tests.harness.fleet import Fleet
from tests.harness.qemu_procs import qemu_processes_under, serial_lines
from tests.harness.system import give_to_qemu, reachable_dir, require_binary

EVACUATE_BOOK = os.path.join(REPO, 'playbooks', 'evacuate.yml')
HOSTS = ('kvm1', 'kvm2', 'kvm3')
LIMITS = {'kvm2': 400, 'kvm3': 360}
TICKS_PER_SECOND = 18.2


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)


def ticks(path, count=3):
    lines = serial_lines(path, count=count + 2)
    numbers = [int(line.split()[1]) for line in lines if line.startswith('tick ')]
    assert len(numbers) >= count, lines
    return numbers


class Cluster(Fleet):
    """kvm1, kvm2 and kvm3 on this machine (tests.harness.fleet), the targets
    with the memory limits of LIMITS; guests start on kvm1."""

    def __init__(self):
        super().__init__(limits=LIMITS)

    def start_guests(self, guests):
        """guests: {name: (image, memory_mb[, state])}, on kvm1 (Fleet.start_guests)."""
        return super().start_guests(dict((name, ('kvm1',) + tuple(spec)) for name, spec in guests.items()))

    def evacuate(self, check=False, **extra):
        extra_vars = {'node': 'kvm1', 'migrate_ports': '%d-%d' % self.ports}
        extra_vars.update(extra)
        return run_playbook(self.inventory, EVACUATE_BOOK, check=check, extra_vars=extra_vars)


@pytest.fixture
def cluster():
    made = Cluster()
    yield made
    made.destroy()
    for host in HOSTS:
        assert qemu_processes_under(made.run_dir(host)) == []


def evacuate_result(play):
    found = [res['ansible_facts']['evacuate_result'] for _name, res in play.tasks()
             if 'evacuate_result' in res.get('ansible_facts', {})]
    assert found, play
    return found[-1]


def task_result(play, suffix):
    found = [res for name, res in play.tasks() if name.endswith(suffix)]
    assert found, [name for name, _res in play.tasks()]
    return found[-1]


def ran(play, suffix):
    """Results of the tasks whose name ends with suffix that were not skipped."""
    return [res for name, res in play.tasks() if name.endswith(suffix) and not res.get('skipped')]


def stats(play):
    """The play's counters summed over its hosts: localhost (plan and report) and the
    in-memory host of each move (whose delegated tasks count for it)."""
    total = {}
    for counts in play.data['stats'].values():
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    return total


def move_hosts(play):
    return sorted(host for host in play.data['stats'] if host.startswith('evacuate-'))


def ran_anywhere(play, suffix):
    """Results of the tasks whose name ends with suffix that were not skipped, on any host."""
    return [res for host in play.data['stats'] for res in ran_on(play, suffix, host)]


def ran_on(play, suffix, host):
    return [res for name, res in play.tasks(host) if name.endswith(suffix) and not res.get('skipped')]


# -- draining ------------------------------------------------------------------------------
def test_a_node_is_drained_to_two_targets_as_planned(cluster, guest_image):
    # vm-off is defined and not running: it is left alone, and does not make the evacuation fail.
    started = cluster.start_guests({'vm-a': (guest_image('normal'), 64), 'vm-b': (guest_image('normal'), 48),
                                    'vm-c': (guest_image('normal'), 32), 'vm-off': (guest_image('normal'), 32, 'present')})
    assert sorted(started) == ['vm-a', 'vm-b', 'vm-c'] and set(h for h, _pid in started.values()) == {'kvm1'}
    before = dict((name, ticks(cluster.serial('kvm1', name))) for name in started)

    # Check mode: the plan, and nothing changed.
    snapshots = cluster.snapshots()
    checked = cluster.evacuate(check=True)
    assert checked.rc == 0, checked
    assert task_result(checked, 'Show the plan')['msg'] == [
        'Evacuation of kvm1: 3 guest(s) to move, 0 to stay, 1 left alone (not running)',
        'vm-a (64 MiB) -> kvm2',
        'vm-b (48 MiB) -> kvm3',
        'vm-c (32 MiB) -> kvm2',
        'vm-off is stopped: left alone',
        'target kvm2: 400 MiB for guests, 352 planned (vm-a, vm-c), 48 left',
        'target kvm3: 360 MiB for guests, 176 planned (vm-b), 184 left',
        '(each guest counts its memory plus 128 MiB)',
    ]
    result = evacuate_result(checked)
    assert result['check_mode'] is True and result['complete'] is True and result['moved'] == []
    assert result['report'][1:] == ['vm-a: would move to kvm2', 'vm-b: would move to kvm3', 'vm-c: would move to kvm2',
                                    'vm-off: stopped, left alone']
    assert ran_anywhere(checked, 'Migrate the guest with hvops.kvm.migrate') == []
    assert stats(checked)['changed'] == 0
    assert cluster.snapshots() == snapshots and cluster.where() == started

    # The real run.
    drained = cluster.evacuate()
    assert drained.rc == 0, drained
    result = evacuate_result(drained)
    assert result['complete'] is True and result['not_moved'] == [] and result['check_mode'] is False
    assert result['moved'] == ['vm-a', 'vm-b', 'vm-c']
    where = cluster.where()
    assert dict((name, host) for name, (host, _pid) in where.items()) == {'vm-a': 'kvm2', 'vm-b': 'kvm3', 'vm-c': 'kvm2'}
    assert cluster.files('kvm1') == ['guests/vm-off.json']
    for name, outcome in result['guests'].items():
        assert outcome['moved'] is True and outcome['runs_on'] == where[name][0] and outcome['pid'] == where[name][1]
        assert outcome['stats']['transferred_bytes'] > 0 and outcome['stats']['downtime_ms'] is not None
        # The same guest, going on: its tick counter continues.
        after = ticks(cluster.serial(where[name][0], name))
        assert before[name][-1] < after[0] <= before[name][-1] + 300 * TICKS_PER_SECOND, (name, before, after)
    report = result['report']
    assert report[0].startswith('Evacuation of kvm1: 3 guest(s) moved, 0 still there, 1 left alone (not running); ')
    assert report[4:] == ['vm-off: stopped, left alone']
    for line, name in zip(report[1:], ('vm-a', 'vm-b', 'vm-c')):
        stat = result['guests'][name]['stats']
        assert line.startswith('%s: moved to %s (pid %d): migration %d ms, downtime %d ms, '
                               % (name, where[name][0], where[name][1], stat['total_time_ms'], stat['downtime_ms'])), line
    assert task_result(drained, 'Show what happened to each guest')['msg'] == report
    assert stats(drained)['changed'] == 12, 'accept, migrate, finalize and confirm for each guest'
    assert stats(drained)['failures'] == 0 and stats(drained)['rescued'] == 0
    print('\n' + '\n'.join(report))

    # Again, on the empty node: nothing to do, nothing changed.
    snapshots = cluster.snapshots()
    again = cluster.evacuate()
    assert again.rc == 0, again
    assert stats(again)['changed'] == 0
    assert evacuate_result(again)['report'] == ['Nothing to move: kvm1 runs no guest', 'vm-off: stopped, left alone']
    assert evacuate_result(again)['complete'] is True
    assert cluster.snapshots() == snapshots and cluster.where() == where


def test_a_guest_too_big_for_any_target_is_refused_before_anything_moves(cluster, guest_image):
    started = cluster.start_guests({'vm-big': (guest_image('normal'), 512), 'vm-small': (guest_image('normal'), 32)})
    snapshots = cluster.snapshots()
    refused = cluster.evacuate()
    assert refused.rc != 0
    message = task_result(refused, 'Refuse, saying which guests cannot go anywhere')['msg']
    assert message == ('Not evacuating kvm1: vm-big fits on no target (kvm2: not enough memory (needs 640 MiB, 400 MiB '
                       'left); kvm3: not enough memory (needs 640 MiB, 360 MiB left)). Nothing was migrated. Make '
                       'room on the targets, or set evacuate_allow_partial=true to move the other guests.')
    assert ran_anywhere(refused, 'Migrate the guest with hvops.kvm.migrate') == []
    result = evacuate_result(refused)
    assert result['refused'] is True and result['not_moved'] == ['vm-big'] and result['moved'] == []
    assert stats(refused)['changed'] == 0
    assert cluster.snapshots() == snapshots and cluster.where() == started

    # Allowed to be partial, with a migrate role variable it refuses: its failure before it
    # started anything is noted (the guest untouched) and the play fails, naming both.
    broken = cluster.evacuate(evacuate_allow_partial=True, migrate_timeout='soon')
    assert broken.rc != 0
    result = evacuate_result(broken)
    assert result['moved'] == [] and result['not_moved'] == ['vm-small', 'vm-big']
    outcome = result['guests']['vm-small']
    assert outcome['moved'] is False and outcome['runs_on'] == 'kvm1' and outcome['rolled_back'] is False
    assert outcome['message'].startswith('Migration of vm-small from kvm1 to kvm2 failed before it started, in ')
    assert 'migrate_timeout' in outcome['message'] and outcome['message'].endswith('. Nothing was changed.')
    assert result['report'][1] == 'vm-small: NOT moved: ' + outcome['message'] and '\n' not in outcome['message']
    assert stats(broken)['changed'] == 0 and stats(broken)['rescued'] == 1
    assert cluster.snapshots() == snapshots and cluster.where() == started

    # Allowed to be partial: the small one moves, the big one stays, and the play still fails, naming it.
    partial = cluster.evacuate(evacuate_allow_partial=True)
    assert partial.rc != 0
    result = evacuate_result(partial)
    assert result['moved'] == ['vm-small'] and result['not_moved'] == ['vm-big'] and result['complete'] is False
    assert result['report'][0].startswith('Evacuation of kvm1: 1 guest(s) moved, 1 still there')
    assert result['report'][2].startswith('vm-big: stays on kvm1: fits on no target (kvm2: not enough memory')
    assert task_result(partial, 'Fail when a guest is still on the node')['msg'] == \
        'Evacuation incomplete: vm-big on kvm1 (see the report above).'
    where = cluster.where()
    assert where == {'vm-big': started['vm-big'], 'vm-small': ('kvm2', result['guests']['vm-small']['pid'])}


@pytest.mark.parametrize('parallel', [1, 3])
def test_a_failed_migration_leaves_that_guest_on_the_node_and_the_others_move(cluster, guest_image, parallel):
    # vm-dirty rewrites 48 MiB, at 4 MiB/s: it cannot finish within the 2 s timeout, and is rolled back.
    # It is the biggest, so it goes first; the idle guests move after it within the same limits.
    started = cluster.start_guests({'vm-dirty': (guest_image('dirty', dirty_mib=48), 64),
                                    'vm-a': (guest_image('normal'), 32), 'vm-c': (guest_image('normal'), 32)})
    before = ticks(cluster.serial('kvm1', 'vm-dirty'))
    # With parallel 3 all three move side by side: the failure of one does not stop the others.
    failed = cluster.evacuate(migrate_max_bandwidth_mib=4, migrate_timeout=2, evacuate_parallel=parallel)
    assert failed.rc != 0, failed
    result = evacuate_result(failed)
    assert result['moved'] == ['vm-a', 'vm-c'] and result['not_moved'] == ['vm-dirty']
    assert [move['instance'] for move in result['plan']['moves']] == ['vm-dirty', 'vm-a', 'vm-c']
    outcome = result['guests']['vm-dirty']
    assert outcome['moved'] is False and outcome['rolled_back'] is True and outcome['runs_on'] == 'kvm1'
    assert outcome['target'] == 'kvm2' and outcome['pid'] == started['vm-dirty'][1]
    assert 'not done within the timeout of 2 s' in outcome['message']
    assert result['report'][1:3] == [line for line in result['report'] if line.startswith(('vm-a:', 'vm-c:'))]
    assert result['report'][3] == 'vm-dirty: NOT moved: ' + outcome['message']
    assert outcome['message'].endswith('Rolled back: the incoming copy on kvm2 was removed, and vm-dirty runs on kvm1'
                                       ' (pid %d).' % started['vm-dirty'][1])
    assert task_result(failed, 'Fail when a guest is still on the node')['msg'] == \
        'Evacuation incomplete: vm-dirty on kvm1 (see the report above).'
    # vm-dirty runs on kvm1 only, the same QEMU, going on; the others moved.
    where = cluster.where()
    assert where['vm-dirty'] == started['vm-dirty']
    assert where['vm-a'][0] in ('kvm2', 'kvm3') and where['vm-c'][0] in ('kvm2', 'kvm3')
    assert [name for name in cluster.files('kvm2') + cluster.files('kvm3') if 'vm-dirty' in name] == []
    after = ticks(cluster.serial('kvm1', 'vm-dirty'))
    assert before[-1] < after[0], (before, after)
    # One move host per guest, each rescued (its failure noted), none failed.
    assert move_hosts(failed) == ['evacuate-kvm1-vm-a', 'evacuate-kvm1-vm-c', 'evacuate-kvm1-vm-dirty']
    # Rescued twice: the migrate role's rollback, and the move noting the failure.
    assert stats(failed)['rescued'] == 2 and failed.data['stats']['localhost']['failures'] == 1
    assert sum(failed.data['stats'][host]['failures'] for host in move_hosts(failed)) == 0
    print('\n' + '\n'.join(result['report']))


# -- several at a time -----------------------------------------------------------------------
def intervals(result):
    """{instance: (start, end)} of each migration as QEMU timed it: it completed at
    migration_completed_at, total_time_ms after it started."""
    found = {}
    for name, outcome in result['guests'].items():
        end = float(outcome['migration_completed_at'])
        found[name] = (end - outcome['stats']['total_time_ms'] / 1000.0, end)
        # Within the role's own notes of the migrate phase (controller clock, same machine).
        assert float(outcome['migration_started']) - 0.5 <= found[name][0], (name, outcome)
        assert found[name][1] <= float(outcome['migration_finished']) + 0.5, (name, outcome)
    return found


def overlapping(spans):
    """Pairs of instances whose migrations ran at the same time."""
    names = sorted(spans)
    return [(one, two) for index, one in enumerate(names) for two in names[index + 1:]
            if spans[one][0] < spans[two][1] and spans[two][0] < spans[one][1]]


@pytest.mark.parametrize('parallel', [1, 3])
def test_evacuate_parallel_moves_that_many_guests_at_a_time(cluster, guest_image, parallel):
    # Guests that keep rewriting 2 MiB, sent at 2 MiB/s each: every migration takes a second or
    # more (the downtime limit lets it converge), so side by side they overlap for long.
    image = guest_image('dirty', dirty_mib=2)
    started = cluster.start_guests({'vm-a': (image, 64), 'vm-b': (guest_image('dirty', dirty_mib=2), 48),
                                    'vm-c': (guest_image('dirty', dirty_mib=2), 32)})
    before = dict((name, ticks(cluster.serial('kvm1', name))) for name in started)
    drained = cluster.evacuate(evacuate_parallel=parallel, migrate_max_bandwidth_mib=2, migrate_downtime_limit_ms=2000)
    assert drained.rc == 0, drained
    result = evacuate_result(drained)
    assert result['complete'] is True and result['moved'] == ['vm-a', 'vm-b', 'vm-c']
    assert result['plan']['batches'] == ([['vm-a', 'vm-b', 'vm-c']] if parallel == 3 else [['vm-a'], ['vm-b'], ['vm-c']])
    where = cluster.where()
    assert dict((name, host) for name, (host, _pid) in where.items()) == {'vm-a': 'kvm2', 'vm-b': 'kvm3', 'vm-c': 'kvm2'}
    assert cluster.files('kvm1') == []
    for name, outcome in result['guests'].items():
        assert outcome['moved'] is True and outcome['pid'] == where[name][1]
        after = ticks(cluster.serial(where[name][0], name))
        assert before[name][-1] < after[0] <= before[name][-1] + 300 * TICKS_PER_SECOND, (name, before, after)
    assert stats(drained)['changed'] == 12 and stats(drained)['failures'] == 0
    assert move_hosts(drained) == ['evacuate-kvm1-vm-a', 'evacuate-kvm1-vm-b', 'evacuate-kvm1-vm-c']
    spans = intervals(result)
    pairs = overlapping(spans)
    if parallel == 3:
        assert len(pairs) >= 1, spans
        # Each migrate task ran for its own play host, side by side.
        assert len(ran_anywhere(drained, 'Migrate from the source')) == 3
    else:
        assert pairs == [], spans
    first = min(start for start, _end in spans.values())
    print('\nevacuate_parallel=%d: drained in %s s; migrations (s from the first start): %s; overlapping: %s' % (
        parallel, result['elapsed_s'],
        ', '.join('%s %.1f-%.1f' % (name, start - first, end - first) for name, (start, end) in sorted(spans.items())),
        pairs))


# -- local disks: evacuate_storage copy -------------------------------------------------------
MIB = 1024 * 1024


@pytest.fixture
def local_dirs():
    """A directory of kvm1's for the guests' disks and one for the targets' copies."""
    made = {'node': reachable_dir('hk-src-'), 'targets': reachable_dir('hk-dst-')}
    yield made
    for path in made.values():
        shutil.rmtree(path, ignore_errors=True)


def local_disk(directory, name, image, size=None):
    """A copy of the test guest's image in directory, the QEMU user's; with size,
    a sparse file of that many bytes (the guest still boots from its first MiB)."""
    path = os.path.join(directory, name + '.img')
    shutil.copyfile(image, path)
    if size:
        os.truncate(path, size)
    return give_to_qemu(path)


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_a_guest_with_a_local_disk_is_drained_with_its_disk_copied(cluster, guest_image, local_dirs):
    source = local_disk(local_dirs['node'], 'vm-local', guest_image('normal'))
    copied = os.path.join(local_dirs['targets'], 'vm-local.img')
    digest = sha256(source)
    cluster.start_guests({'vm-local': (source, 32)})
    before = ticks(cluster.serial('kvm1', 'vm-local'))
    drained = cluster.evacuate(evacuate_storage='copy', evacuate_storage_map={local_dirs['node']: local_dirs['targets']},
                               evacuate_remove_source_disks=True)
    assert drained.rc == 0, drained
    result = evacuate_result(drained)
    assert result['complete'] is True and result['moved'] == ['vm-local']
    # The targets' storage facts were gathered for the mapped directory, and the plan counted the disk there.
    gathered = task_result(drained, 'Gather the facts of the targets')['results']
    for target in gathered:
        storage = target['ansible_facts']['kvm_node']['storage']
        assert [entry['paths'] for entry in storage['filesystems']] == [[local_dirs['targets']]], storage
    plan = result['plan']
    assert plan['storage'] == 'copy' and plan['moves'][0]['copy_mb'] == 1
    assert plan['targets']['kvm2']['disks'] == [{'directory': local_dirs['targets'], 'planned_mb': 1,
                                                 'free_mb': plan['targets']['kvm2']['disks'][0]['free_mb']}]
    summary = task_result(drained, 'Show the plan')['msg']
    assert summary[1] == 'vm-local (32 MiB, disks 1 MiB copied) -> kvm2'
    assert re.fullmatch(r'target kvm2: \d+ MiB free on %s, 1 planned for copied disks' % re.escape(local_dirs['targets']),
                        summary[3]), summary
    # The guest runs on kvm2 from the copy, goes on, and kvm2's definition names the copy; the node's
    # image was removed (evacuate_remove_source_disks), and nothing of the guest is left on kvm1.
    where = cluster.where()
    assert where == {'vm-local': ('kvm2', result['guests']['vm-local']['pid'])}
    [(pid, argv)] = qemu_processes_under(cluster.run_dir('kvm2'))
    assert any(copied in arg for arg in argv) and not any(source in arg for arg in argv), argv
    with open(os.path.join(cluster.state_dir('kvm2'), 'guests', 'vm-local.json')) as handle:
        assert json.load(handle)['disks'][0]['path'] == copied
    assert sha256(copied) == digest
    assert not os.path.exists(source) and cluster.files('kvm1') == []
    after = ticks(cluster.serial('kvm2', 'vm-local'))
    assert before[-1] < after[0] <= before[-1] + 300 * TICKS_PER_SECOND, (before, after)
    print('\n' + '\n'.join(result['report']))


def test_a_guest_whose_disk_no_target_has_room_for_stays_and_nothing_moves(cluster, guest_image, local_dirs):
    # 4 TiB of virtual size (a sparse file): no target's file system has room for its copy.
    source = local_disk(local_dirs['node'], 'vm-huge', guest_image('normal'), size=4 << 40)
    started = cluster.start_guests({'vm-huge': (source, 32)})
    snapshots = cluster.snapshots()
    refused = cluster.evacuate(evacuate_storage='copy', evacuate_storage_map={local_dirs['node']: local_dirs['targets']})
    assert refused.rc != 0
    message = task_result(refused, 'Refuse, saying which guests cannot go anywhere')['msg']
    directory = re.escape(local_dirs['targets'])
    assert re.fullmatch(
        r'Not evacuating kvm1: vm-huge fits on no target \(kvm2: not enough disk space \(needs 4194368 MiB on %s of'
        r' kvm2, (\d+) MiB free\); kvm3: not enough disk space \(needs 4194368 MiB on %s of kvm3, (\d+) MiB'
        r' free\)\)\. Nothing was migrated\. .*' % (directory, directory), message), message
    free = os.statvfs(local_dirs['targets'])
    shown = int(re.search(r'(\d+) MiB free', message).group(1))
    assert abs(shown - free.f_bavail * free.f_frsize // MIB) < 256, (shown, message)
    result = evacuate_result(refused)
    assert result['refused'] is True and result['not_moved'] == ['vm-huge'] and result['moved'] == []
    assert ran_anywhere(refused, 'Migrate the guest with hvops.kvm.migrate') == []
    assert stats(refused)['changed'] == 0
    assert cluster.snapshots() == snapshots and cluster.where() == started
    assert os.listdir(local_dirs['targets']) == []
    print('\n' + message)
