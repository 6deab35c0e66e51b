"""Durable nodes: definitions in state_dir outlive a reboot, the node's boot
starts its autostart guests (and crashed ones with restart_policy on-crash) in
order and within its memory, its shutdown powers guests off (ACPI, then
forced) and records them as stopped, playbooks/heal.yml restarts crashed
guests, and collection 0.1's run_dir/conf definitions are taken over.

A "reboot" of a simulated node is what a reboot does to it: every QEMU
killed and run_dir, a tmpfs, emptied; state_dir stays. The node's boot and
shutdown run as the hvops-kvm-guests unit runs them (python3 -m
..._node_service with the collection's module_utils on PYTHONPATH); the unit
itself under a real systemd is in test_guests_unit.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.harness import COLLECTIONS, REPO
from tests.harness.ansible_run import run_adhoc, run_playbook
from tests.harness.qemu_procs import qemu_processes_under, ticks, wait_until
from tests.harness.system import require_binary

MODULE = 'hvops.kvm.kvm_instance'
FACTS = 'hvops.kvm.kvm_node_facts'
HEAL = os.path.join(REPO, 'playbooks', 'heal.yml')
SERVICE = 'ansible_collections.hvops.kvm.plugins.module_utils._node_service'


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat', 'nasm'):
        require_binary(program)


def instance(node, name, **args):
    done = run_adhoc(node.inventory, MODULE, dict(args, name=name, run_dir=node.run_dir))
    assert done.rc == 0, done
    return done.result()


def define(node, image, name, state='started', memory=32, **policy):
    return instance(node, name, state=state, memory=memory, accel='tcg', machine='pc',
                    disks=[{'path': image, 'interface': 'ide'}], **policy)


def facts(node):
    done = run_adhoc(node.inventory, FACTS, {'run_dir': node.run_dir, 'gather_subset': ['instances']})
    assert done.rc == 0, done
    return done.result()['ansible_facts']['kvm_node']


def live(node):
    """{instance name: pid} of the QEMUs running under the node's run_dir."""
    found = {}
    for pid, argv in qemu_processes_under(node.run_dir):
        found[argv[argv.index('-name') + 1].split(',')[0]] = pid
    return found


def reboot(node):
    """What a reboot does to a node that did not stop its guests: every QEMU
    killed, run_dir (a tmpfs) emptied; state_dir stays."""
    for pid in live(node).values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not live(node), 10)
    shutil.rmtree(node.run_dir)


def service(node, action, *args):
    """The node's boot or shutdown as the unit runs it; its report."""
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    argv = [sys.executable, '-m', SERVICE, action, '--run-dir', node.run_dir, '--state-dir', node.state_dir]
    done = subprocess.run(argv + list(args), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    with open(os.path.join(node.state_dir, 'node', action + '.json')) as handle:
        report = json.load(handle)
    assert json.loads(done.stdout.splitlines()[-1]) == report
    return report, done.stdout


def serial(node, name):
    return os.path.join(node.run_dir, 'ctrl', name + '.serial')


def test_a_rebooted_node_starts_its_autostart_guests_in_order_within_its_memory(node, guest_image):
    define(node, guest_image(), 'late', autostart=True, autostart_order=20)
    define(node, guest_image(), 'early', autostart=True, autostart_order=10, autostart_delay=2)
    define(node, guest_image(), 'manual')
    define(node, guest_image(), 'fragile', restart_policy='on-crash')
    define(node, guest_image(), 'big', state='present', memory=256, autostart=True, autostart_order=30)
    define(node, guest_image(), 'idle', state='present')
    reboot(node)

    # The definitions outlived the reboot; the guests it took down crashed with it.
    seen = facts(node)['instances']
    assert sorted(seen) == ['big', 'early', 'fragile', 'idle', 'late', 'manual'], seen
    assert all(record['defined'] for record in seen.values()), seen
    assert {name: record['state'] for name, record in seen.items()} == {
        'big': 'stopped', 'idle': 'stopped', 'early': 'crashed', 'late': 'crashed', 'manual': 'crashed',
        'fragile': 'crashed'}, seen
    assert seen['early']['autostart'] is True and seen['early']['autostart_order'] == 10
    assert seen['fragile']['restart_policy'] == 'on-crash' and seen['manual']['restart_policy'] == 'never'

    # 500 MiB for the guests started at boot: three of 32 MiB with a margin of
    # 128 MiB each (480 MiB) fit, big (256 + 128) does not fit after them.
    report, printed = service(node, 'boot', '--memory-limit-mb', '500')
    started = [(guest['name'], guest['why']) for guest in report['started']]
    assert started == [('fragile', 'crashed'), ('early', 'autostart'), ('late', 'autostart')], report
    times = dict((guest['name'], guest['at']) for guest in report['started'])
    assert times['late'] - times['early'] >= 2, 'early has an autostart_delay of 2 s'
    refused = dict((guest['name'], guest['reason']) for guest in report['not_started'])
    assert list(refused) == ['big'], report
    assert refused['big'].startswith('needs 384 MiB (256 MiB and a margin of 128 MiB), 20 MiB available'), refused
    assert 'NOT started big: needs 384 MiB' in printed and 'started early (autostart)' in printed
    assert sorted(live(node)) == ['early', 'fragile', 'late']
    for name in ('early', 'fragile', 'late'):
        ticks(serial(node, name))
    after = facts(node)['instances']
    assert {name: record['state'] for name, record in after.items()} == {
        'big': 'stopped', 'idle': 'stopped', 'early': 'running', 'late': 'running', 'fragile': 'running',
        'manual': 'crashed'}, after

    # A second start in the same boot starts nothing.
    again, printed = service(node, 'boot')
    assert again['started'] == [] and 'this boot of the node was started already' in again['skipped'], again


def test_the_node_shutdown_powers_off_acpi_then_forces_and_the_next_boot_restarts_no_crash(node, guest_image):
    define(node, guest_image(), 'web', autostart=True, autostart_order=1)
    define(node, guest_image(), 'db', restart_policy='on-crash', autostart_order=5)
    define(node, guest_image('stubborn'), 'stubborn', autostart_order=3)
    for name in ('web', 'db', 'stubborn'):
        ticks(serial(node, name))
    # A definition collection 0.1 left in run_dir/conf is saved before the tmpfs goes.
    define(node, guest_image(), 'legacy', state='present')
    os.rename(os.path.join(node.state_dir, 'guests', 'legacy.json'), os.path.join(node.run_dir, 'conf', 'legacy.json'))
    began = time.monotonic()
    report, _printed = service(node, 'shutdown', '--timeout', '4')
    assert report['taken_over'] == ['legacy'], report
    assert os.path.exists(os.path.join(node.state_dir, 'guests', 'legacy.json'))
    took = time.monotonic() - began
    assert report['order'] == ['db', 'stubborn', 'web'], 'reverse autostart order'
    how = dict((guest['name'], guest['how']) for guest in report['stopped'])
    assert how == {'db': 'acpi', 'web': 'acpi', 'stubborn': 'forced'}, report
    # In parallel: the stubborn guest's 4 s timeout is paid once, not added to the others'.
    assert took < 4 + 10, took
    assert live(node) == {}
    for name in ('web', 'db', 'stubborn'):
        with open(os.path.join(node.state_dir, 'guests', name + '.last')) as handle:
            last = json.load(handle)
        assert (last['state'], last['by']) == ('stopped', 'node-shutdown'), last
    assert {name: record['state'] for name, record in facts(node)['instances'].items()} == {
        'web': 'stopped', 'db': 'stopped', 'stubborn': 'stopped', 'legacy': 'stopped'}

    shutil.rmtree(node.run_dir)   # the reboot after a clean shutdown
    booted, _printed = service(node, 'boot')
    assert [guest['name'] for guest in booted['started']] == ['web'], 'db was stopped, not crashed'
    assert sorted(live(node)) == ['web']


def test_heal_restarts_crashed_guests_with_on_crash_and_reports_them(node, guest_image, tmp_path):
    define(node, guest_image(), 'phoenix', restart_policy='on-crash')
    define(node, guest_image(), 'mortal')
    define(node, guest_image(), 'steady', restart_policy='on-crash')
    pids = live(node)
    for name in ('phoenix', 'mortal'):
        os.kill(pids[name], signal.SIGKILL)
    wait_until(lambda: sorted(live(node)) == ['steady'], 10)
    inventory = str(tmp_path / 'fleet.ini')
    with open(inventory, 'w') as handle:
        handle.write('[kvm_nodes]\nnode1 ansible_connection=local ansible_python_interpreter=%s'
                     ' kvm_run_dir=%s kvm_state_dir=%s\n' % (sys.executable, node.run_dir, node.state_dir))

    planned = run_playbook(inventory, HEAL, check=True)
    assert planned.rc == 0, planned
    assert sorted(live(node)) == ['steady'], 'check mode started something'
    said = dict(planned.tasks('node1'))['Say what was done']['msg']
    assert 'restarted phoenix' in said and 'left alone (restart_policy never): mortal' in said, said

    healed = run_playbook(inventory, HEAL)
    assert healed.rc == 0, healed
    result = dict(healed.tasks('node1'))['Note what was done']['ansible_facts']['heal_result']
    assert result == {'restarted': ['phoenix'], 'failed': [], 'left_crashed': ['mortal']}, result
    assert sorted(live(node)) == ['phoenix', 'steady']
    assert live(node)['steady'] == pids['steady'], 'a running guest is not touched'
    ticks(serial(node, 'phoenix'))

    again = run_playbook(inventory, HEAL)
    assert again.rc == 0, again
    assert not any(result.get('changed') for _name, result in again.tasks('node1')), again


def test_a_definition_of_collection_0_1_in_run_dir_is_read_then_taken_over(node, guest_image):
    image = guest_image()
    define(node, image, 'old', state='present', vnc_bind_address='127.0.0.1', vnc_display=45,
           vnc_password='s3cret!')
    define(node, guest_image(), 'older', state='present')
    guests = os.path.join(node.state_dir, 'guests')
    conf = os.path.join(node.run_dir, 'conf')
    for name, ext in (('old', '.json'), ('old', '.vncpass'), ('older', '.json')):
        os.rename(os.path.join(guests, name + ext), os.path.join(conf, name + ext))

    # Read where 0.1 left it: check mode and facts see it and move nothing.
    predicted = run_adhoc(node.inventory, MODULE, {'name': 'old', 'run_dir': node.run_dir, 'state': 'started'},
                          check=True)
    assert predicted.rc == 0 and predicted.result()['actions'] == ['start'], predicted
    assert facts(node)['instances']['old']['defined'] is True
    assert sorted(os.listdir(guests)) == [] and os.path.exists(os.path.join(conf, 'old.json'))
    assert sorted(facts(node)['instances']) == ['old', 'older']

    started = run_adhoc(node.inventory, MODULE, {'name': 'old', 'run_dir': node.run_dir, 'state': 'started'})
    assert started.rc == 0, started
    result = started.result()
    assert result['state'] == 'running' and result['definition']['memory'] == 32, result
    assert any('moved the definitions of old, older from run_dir/conf' in warning for warning in result['warnings'])
    # The run takes over every definition 0.1 left, not only its own.
    assert sorted(os.listdir(guests)) == ['old.json', 'old.last', 'old.vncpass', 'older.json']
    assert not os.path.exists(os.path.join(conf, 'old.json')) and not os.path.exists(os.path.join(conf, 'old.vncpass'))
    with open(os.path.join(guests, 'old.vncpass')) as handle:
        assert handle.read() == 's3cret!\n'
    assert oct(os.stat(os.path.join(guests, 'old.vncpass')).st_mode & 0o777) == '0o600'
    assert oct(os.stat(node.state_dir).st_mode & 0o777) == '0o700'


def test_autostart_options_are_idempotent_checked_and_refused_without_a_definition(node, guest_image):
    image = guest_image()
    first = define(node, image, 'vm1', state='present', autostart=True, autostart_order=7)
    assert first['actions'] == ['define', 'set_policy'], first
    assert first['policy'] == {'autostart': True, 'autostart_order': 7, 'autostart_delay': 0,
                               'restart_policy': 'never'}, first
    again = define(node, image, 'vm1', state='present', autostart=True, autostart_order=7)
    assert again['changed'] is False, again
    # Only what is given changes; the rest of the stored policy stays.
    changed = instance(node, 'vm1', state='present', restart_policy='on-crash')
    assert changed['actions'] == ['set_policy'] and changed['policy']['autostart_order'] == 7, changed
    for bad, words in (({'autostart_order': -1}, 'autostart_order must be a whole number from 0 to 9999'),
                       ({'autostart_delay': 99999}, 'autostart_delay must be a whole number from 0 to 3600')):
        before = node.snapshot()
        done = run_adhoc(node.inventory, MODULE, dict(bad, name='vm1', run_dir=node.run_dir, state='present'))
        assert done.rc != 0 and words in done.result()['msg'], done
        assert node.snapshot() == before
    orphan = run_adhoc(node.inventory, MODULE,
                       {'name': 'nobody', 'run_dir': node.run_dir, 'state': 'stopped', 'autostart': True})
    assert orphan.rc != 0 and 'belong to a defined instance' in orphan.result()['msg'], orphan
    assert not os.path.exists(os.path.join(node.state_dir, 'guests', 'nobody.policy'))
    gone = instance(node, 'vm1', state='absent')
    assert gone['actions'] == ['undefine'], gone
    assert os.listdir(os.path.join(node.state_dir, 'guests')) == []
