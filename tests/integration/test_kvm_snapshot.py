"""kvm_snapshot through real ansible runs: the Linux test guest (its tick
counter on the serial console) on qcow2 disks made with qemu-img, real QEMU
under TCG, real qemu-img and qemu-io."""
import fcntl
import os
import re
import subprocess
import time

import pytest

from tests.harness.ansible_run import run_adhoc, run_playbook, write_playbook
from tests.harness.linux_guest import build_linux_guest
from tests.harness.nodes import LocalNode
from tests.harness.qemu_procs import SerialRecorder
from tests.harness.system import give_to_qemu, require_binary

SNAPSHOT = 'hvops.kvm.kvm_snapshot'
INFO = 'hvops.kvm.kvm_snapshot_info'
INSTANCE = 'hvops.kvm.kvm_instance'
TICK = re.compile(r'^tick (\d+)$')


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'qemu-img', 'qemu-io', 'socat'):
        require_binary(program)


@pytest.fixture
def node():
    made = LocalNode()
    yield made
    made.destroy()


def image(node, name, fmt='qcow2', size='16M'):
    path = os.path.join(node.base, name)
    subprocess.run(['qemu-img', 'create', '-q', '-f', fmt, path, size], check=True)
    return give_to_qemu(path)


def qemu_io(path, command):
    """qemu-io COMMAND on a qcow2 image; True when it succeeded (a read -P of
    another pattern fails)."""
    done = subprocess.run(['qemu-io', '-f', 'qcow2', '-c', command, path], capture_output=True, text=True,
                          check=False)
    return done.returncode == 0 and 'Pattern verification failed' not in done.stdout + done.stderr


def listed(path):
    done = subprocess.run(['qemu-img', 'snapshot', '-U', '-l', path], capture_output=True, text=True, check=True)
    return [line.split()[1] for line in done.stdout.splitlines()[2:]]


def snap(node, check=False, diff=False, **args):
    args = dict({'run_dir': node.run_dir, 'name': 'vm'}, **args)
    return run_adhoc(node.inventory, SNAPSHOT, args, check=check, diff=diff)


def info(node, name='vm'):
    return ok(run_adhoc(node.inventory, INFO, {'run_dir': node.run_dir, 'name': name}))


def ok(done):
    assert done.rc == 0, done
    return done.result()


def refused(done, words):
    assert done.rc != 0, done
    result = done.result()
    assert result.get('failed') and words in result['msg'], result
    return result


def refusals(node, cases):
    """Each (args, words) of cases as one task of a single playbook (errors
    ignored): each must fail, saying words. Their results."""
    tasks = [{'name': 'case %d' % index, 'ignore_errors': True,
              SNAPSHOT: dict({'run_dir': node.run_dir, 'state_dir': node.state_dir, 'name': 'vm'}, **args)}
             for index, (args, _words) in enumerate(cases)]
    done = run_playbook(node.inventory, write_playbook(os.path.join(node.base, 'refusals.yml'), tasks))
    results = [result for _name, result in done.tasks()]
    assert len(results) == len(cases), done
    for (args, words), result in zip(cases, results):
        assert result.get('failed') and words in result['msg'], (args, result)
        assert result['changed'] is False
    return results


def names(result):
    return [record['name'] for record in result['snapshots']]


def ticks(recorder, since=0):
    return [int(match.group(1)) for match in (TICK.match(line) for line in recorder.lines()[since:]) if match]


def guest(node, disks, **extra):
    kernel, initrd = build_linux_guest('normal')
    args = {'name': 'vm', 'run_dir': node.run_dir, 'state_dir': node.state_dir, 'memory': 128, 'accel': 'tcg', 'machine': 'pc',
            'kernel': kernel, 'initrd': initrd, 'root': '/dev/ram0', 'disks': disks}
    args.update(extra)
    return args


def test_running_guest_ram_and_disk_snapshots_revert_and_retention(node):
    d0, d1 = image(node, 'd0.qcow2'), image(node, 'd1.qcow2')
    ro = image(node, 'ro.img', fmt='raw', size='1M')
    recorder = SerialRecorder(os.path.join(node.run_dir, 'ctrl', 'vm.serial'))
    try:
        started = run_adhoc(node.inventory, INSTANCE, guest(node, [
            {'path': d0, 'format': 'qcow2'}, {'path': ro, 'readonly': True}, {'path': d1, 'format': 'qcow2'}],
            guest_agent=True))
        assert started.rc == 0, started
        recorder.wait_for('hvops-linux-guest ready', 40)

        # Check mode predicts, touches nothing.
        predicted = ok(snap(node, snapshot='ram1', check=True, diff=True))
        assert predicted['changed'] is True and predicted['actions'] == ['create ram1'], predicted
        assert predicted['diff'] == {'before': {'snapshots': []}, 'after': {'snapshots': ['ram1']}}
        assert listed(d0) == [] and listed(d1) == []

        # With RAM (the default for a running guest): on both writable disks, RAM in the first.
        seen = len(recorder.lines())
        before = ticks(recorder)[-1]
        made = ok(snap(node, snapshot='ram1'))
        after = ticks(recorder)[-1]
        assert made['changed'] is True and made['state'] == 'running', made
        [ram1] = made['snapshots']
        assert ram1['vmstate'] is True and ram1['vm_state_size'] > 64 << 20, ram1
        assert ram1['disks'] == [d0, d1] and re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', ram1['date']), ram1
        assert listed(d0) == listed(d1) == ['ram1']
        assert ok(snap(node, snapshot='ram1'))['changed'] is False

        # Disk-only, frozen by the guest agent (thawed after: the guest goes on ticking).
        frozen = ok(snap(node, snapshot='disk1', vmstate=False, freeze=True))
        assert frozen['changed'] is True, frozen
        assert [(r['name'], r['vmstate'], r['vm_state_size']) for r in frozen['snapshots']] == [
            ('ram1', True, ram1['vm_state_size']), ('disk1', False, 0)]
        refusals(node, [
            ({'snapshot': 'disk2', 'freeze': True}, 'freeze is for disk-only snapshots'),
            # A running guest cannot go back to its disks alone.
            ({'snapshot': 'disk1', 'state': 'reverted'}, 'holds only the disks'),
            ({'snapshot': 'nope', 'state': 'reverted'}, 'has no snapshot nope')])
        assert listed(d0) == listed(d1) == ['ram1', 'disk1']

        # Revert with RAM: the tick counter goes back to the snapshot's, and on from there.
        time.sleep(3)
        last = ticks(recorder)[-1]
        mark = len(recorder.lines())
        reverted = ok(snap(node, snapshot='ram1', state='reverted'))
        assert reverted['changed'] is True and reverted['actions'] == ['revert ram1'], reverted
        recorder.wait_for('tick %d' % (after + 2), 10)
        time.sleep(1.5)
        back = ticks(recorder, mark)
        first = back.index(min(back))
        print('\nticks: %d..%d while the snapshot was taken, %d before the revert, then %s'
              % (before, after, last, back))
        assert before <= back[first] <= after + 1 < last, (before, after, last, back, ticks(recorder, seen))
        assert back[first:] == list(range(back[first], back[first] + len(back) - first)), back
        listing = info(node)
        assert listing['state'] == 'running' and listing['changed'] is False, listing
        assert listing['snapshots'] == reverted['snapshots'] and names(listing) == ['ram1', 'disk1']

        # Retention: the newest two are kept, the named one among them.
        kept = ok(snap(node, snapshot='disk2', vmstate=False, retention=2, diff=True))
        assert kept['actions'] == ['create disk2', 'delete ram1'], kept
        assert names(kept) == ['disk1', 'disk2'] and kept['diff']['after'] == {'snapshots': ['disk1', 'disk2']}
        assert listed(d0) == listed(d1) == ['disk1', 'disk2']
        assert ok(snap(node, snapshot='disk2', retention=2))['changed'] is False

        gone = ok(snap(node, snapshot='disk1', state='absent'))
        assert gone['actions'] == ['delete disk1'] and names(gone) == ['disk2'], gone
        assert ok(snap(node, snapshot='disk1', state='absent'))['changed'] is False
        assert listed(ro) == []
    finally:
        recorder.stop()


def test_stopped_instance_offline_create_list_revert_delete_and_refusals(node):
    d0, d1 = image(node, 'd0.qcow2'), image(node, 'd1.qcow2')
    raw = image(node, 'raw.img', fmt='raw', size='1M')
    steps = [
        {'name': 'define', INSTANCE: guest(node, [{'path': d0, 'format': 'qcow2'}, {'path': d1, 'format': 'qcow2'}],
                                           state='present')},
        {'name': 'define raw', INSTANCE: guest(node, [{'path': raw}], name='rawvm', state='present')},
    ]
    playbook = write_playbook(os.path.join(node.base, 'define.yml'), steps)
    assert run_playbook(node.inventory, playbook).rc == 0
    assert qemu_io(d0, 'write -P 0xab 0 64k') and qemu_io(d1, 'write -P 0xab 0 64k')

    predicted = ok(snap(node, snapshot='s1', check=True))
    assert predicted['changed'] is True and listed(d0) == []
    made = ok(snap(node, snapshot='s1'))
    assert made['state'] == 'stopped' and made['actions'] == ['create s1'], made
    assert [(r['name'], r['vmstate'], r['disks']) for r in made['snapshots']] == [('s1', False, [d0, d1])]
    assert ok(snap(node, snapshot='s1'))['changed'] is False

    # Written after the snapshot, gone after the revert.
    assert qemu_io(d0, 'write -P 0xcd 0 64k') and qemu_io(d1, 'write -P 0xcd 0 64k')
    assert ok(snap(node, snapshot='s1', state='reverted'))['changed'] is True
    assert qemu_io(d0, 'read -P 0xab 0 64k') and qemu_io(d1, 'read -P 0xab 0 64k')

    # Retention keeps the newest N by date.
    tasks = [{'name': name, SNAPSHOT: {'run_dir': node.run_dir, 'state_dir': node.state_dir, 'name': 'vm',
                                       'snapshot': name}} for name in ('s2', 's3')]
    assert run_playbook(node.inventory, write_playbook(os.path.join(node.base, 'more.yml'), tasks)).rc == 0
    kept = ok(snap(node, snapshot='s4', retention=2))
    assert kept['actions'] == ['create s4', 'delete s1', 'delete s2'] and names(kept) == ['s3', 's4'], kept
    assert listed(d0) == listed(d1) == ['s3', 's4']

    # Refusals change nothing.
    before = (listed(d0), listed(d1), node.snapshot())
    refusals(node, [
        ({'snapshot': 's5', 'vmstate': True}, 'cannot hold RAM state'),
        ({'snapshot': '12'}, 'not only digits'),
        ({'snapshot': 'a b'}, 'invalid snapshot name'),
        ({'snapshot': '-x'}, 'invalid snapshot name'),
        ({'snapshot': 's5', 'retention': 0}, 'retention must be'),
        ({'snapshot': 'gone', 'state': 'reverted'}, 'has no snapshot gone'),
        ({'snapshot': 's1', 'name': 'ghost'}, 'no such instance'),
        ({'snapshot': 's1', 'name': 'rawvm'}, 'disk 0 (%s) is raw' % raw)])
    subprocess.run(['qemu-img', 'snapshot', '-c', 'half', d1], check=True)
    half = refused(snap(node, snapshot='half', state='absent'), 'snapshot half is inconsistent')
    assert d1 in half['msg'] and d0 not in half['msg'].split('exists on')[1], half
    assert (listed(d0), listed(d1)[:2], node.snapshot()) == before

    # Another run holds the instance's lock: the task waits for it, then gives up, changing nothing.
    lock = os.open(os.path.join(node.run_dir, 'lock', 'vm.lock'), os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refused(snap(node, snapshot='s5', lock_timeout=1), 'another run has held')
    finally:
        os.close(lock)
    assert listed(d0) == ['s3', 's4']

    gone = ok(snap(node, snapshot='s3', state='absent', diff=True))
    assert gone['diff'] == {'before': {'snapshots': ['s3', 's4', 'half']},
                            'after': {'snapshots': ['s4', 'half']}}, gone
    assert ok(snap(node, snapshot='s3', state='absent'))['changed'] is False
    listing = info(node)
    assert listing['state'] == 'stopped' and names(listing) == ['s4', 'half'], listing
    assert listing['snapshots'][1] == {'name': 'half', 'date': listing['snapshots'][1]['date'], 'vm_state_size': 0,
                                       'vmstate': False, 'disks': [d1]}
