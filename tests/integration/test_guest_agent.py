"""The guest agent and cloud-init seeds with the Linux test guest
(tests/linux_guest: a Debian kernel, busybox, Debian's qemu-ga), started
through real ansible runs of hvops.kvm.kvm_instance, watched on its serial
console and asked through hvops.kvm.kvm_node_facts."""
import json
import os
import time

import pytest

from tests.harness.ansible_run import run_adhoc
from tests.harness.linux_guest import build_linux_guest
from tests.harness.loopback import HOSTS, NAME, Loopback
from tests.harness.nodes import LocalNode
from tests.harness.qemu_procs import SerialRecorder, qemu_processes_under, serial_lines, wait_until
from tests.harness.system import require_binary

INSTANCE = 'hvops.kvm.kvm_instance'
FACTS = 'hvops.kvm.kvm_node_facts'
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0vS1H1ZyUOwWfXDt7W6kq0w5aXaGq1sU8m6fQe4ycu ops@hvops-test'
MAC = '52:54:00:4a:00:05'
ADDRESS = '10.77.5.10'


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat', 'xorriso'):
        require_binary(program)


@pytest.fixture
def node():
    made = LocalNode()
    yield made
    made.destroy()


def guest_args(node, name, variant='normal', **extra):
    kernel, initrd = build_linux_guest(variant)
    args = {'name': name, 'run_dir': node.run_dir, 'memory': 128, 'accel': 'tcg', 'machine': 'pc',
            'kernel': kernel, 'initrd': initrd, 'root': '/dev/ram0', 'guest_agent': True}
    args.update(extra)
    return args


def start(node, args):
    """Start a guest with its console recorded from the first byte; (result, recorder)."""
    recorder = SerialRecorder(os.path.join(node.run_dir, 'ctrl', args['name'] + '.serial'))
    done = run_adhoc(node.inventory, INSTANCE, args)
    result = done.result()
    assert done.rc == 0, result
    return result, recorder


def agent_facts(node, timeout=3):
    done = run_adhoc(node.inventory, FACTS, {'run_dir': node.run_dir, 'gather_subset': ['agent'],
                                             'agent_timeout': timeout})
    assert done.rc == 0, done.result()
    return done.result()['ansible_facts']['kvm_node']['instances']


def test_the_agent_reports_and_powers_off_a_guest_seeded_by_cloud_init(node):
    seeded = guest_args(node, 'web', nics=[{'type': 'user', 'mac': MAC}], cloud_init={
        'hostname': 'web1', 'ssh_authorized_keys': [KEY],
        'network_config': {'version': 2, 'ethernets': {'nic0': {
            'match': {'macaddress': MAC}, 'set-name': 'eth0', 'addresses': [ADDRESS + '/24']}}}})
    started, console = start(node, seeded)
    try:
        assert started['changed'] is True
        # Results show a digest of the seed, never its documents.
        assert started['definition']['cloud_init']['documents'] == ['meta-data', 'network-config', 'user-data']
        # (Ansible echoes the task's own arguments under invocation.)
        assert KEY not in str(dict((k, v) for k, v in started.items() if k != 'invocation'))
        lines = console.wait_for('hvops-linux-guest ready')
        assert 'cloud-init: hostname=web1' in lines, lines
        assert 'cloud-init: ssh-key=ssh-ed25519 ops@hvops-test' in lines, lines
        assert 'cloud-init: address=eth0 %s/24' % ADDRESS in lines, lines
        seed = os.path.join(node.run_dir, 'seed', 'web.iso')
        assert oct(os.stat(seed).st_mode & 0o777) == '0o640'

        # The same cloud_init again: nothing changes, the seed is not made again.
        made_at = os.stat(seed).st_mtime_ns
        again = run_adhoc(node.inventory, INSTANCE, seeded).result()
        assert again['changed'] is False and again['pending_restart'] is False, again
        assert os.stat(seed).st_mtime_ns == made_at

        record = agent_facts(node)['web']
        agent = record['agent']
        print('\nagent facts of web: %s' % json.dumps(agent))
        assert agent['status'] == 'ok', agent
        assert agent['hostname'] == 'web1'
        assert agent['os']['id'] == 'hvops-test'
        eth0 = [item for item in agent['interfaces'] if item['name'] == 'eth0']
        assert eth0 and eth0[0]['hardware_address'] == MAC
        assert {'address': ADDRESS, 'prefix': 24, 'family': 'ipv4'} in eth0[0]['addresses']

        pid = started['pid']
        stopped = run_adhoc(node.inventory, INSTANCE, {'name': 'web', 'run_dir': node.run_dir, 'state': 'stopped',
                                                       'stop_mode': 'agent'}).result()
        assert stopped['changed'] is True and stopped['stop_method'] == 'agent', stopped
        console.wait_for('powerdown by agent', timeout=5)
        assert pid not in [p for p, _argv in qemu_processes_under(node.run_dir)]
        # The seed goes with the QEMU; the definition (documents and all) stays.
        assert not os.path.exists(seed)
        assert stopped['definition']['cloud_init']['documents'] == ['meta-data', 'network-config', 'user-data']
    finally:
        console.stop()


def test_silent_and_flooding_agents_are_reported_within_the_timeout(node):
    consoles = []
    try:
        for name, variant in (('mute', 'agent-silent'), ('loud', 'agent-flood')):
            _result, console = start(node, guest_args(node, name, variant))
            consoles.append(console)
        for console, said in zip(consoles, ('agent: silent', 'agent: flooding')):
            assert any(said in line for line in console.wait_for('hvops-linux-guest ready'))

        began = time.monotonic()
        records = agent_facts(node, timeout=2)
        took = time.monotonic() - began
        mute, loud = records['mute']['agent'], records['loud']['agent']
        assert mute['status'] == 'no-answer' and 'within 2s' in mute['error'], mute
        assert loud['status'] == 'bad-answer' and 'not an answer' in loud['error'], loud
        assert mute['hostname'] is None and loud['interfaces'] == []
        # Side by side: the slowest agent's timeout, not the sum (ansible's own start-up aside).
        assert took < 2 * 2 + 8, took
        assert records['mute']['state'] == records['loud']['state'] == 'running'

        # stop_mode agent falls back to the power button, and says so.
        for name in ('mute', 'loud'):
            stopped = run_adhoc(node.inventory, INSTANCE, {'name': name, 'run_dir': node.run_dir,
                                                           'state': 'stopped', 'stop_mode': 'agent',
                                                           'monitor_timeout': 2}).result()
            assert stopped['changed'] is True and stopped['stop_method'] == 'acpi', stopped
            assert any('did not power it off' in warning for warning in stopped['warnings']), stopped
        assert any('powerdown by acpi' in line for line in consoles[0].lines())
        wait_until(lambda: qemu_processes_under(node.run_dir) == [], 10)
    finally:
        for console in consoles:
            console.stop()


def test_a_seeded_guest_migrates_with_its_seed_and_its_agent():
    """The target makes the seed from the definition it is sent and the
    agent answers there; nothing of the seed stays on the source."""
    loop = Loopback()
    console = SerialRecorder(loop.serial('kvm1'))
    try:
        args = guest_args(loop.nodes['kvm1'], NAME, cloud_init={'hostname': 'mover'})
        for key in ('name', 'run_dir'):
            del args[key]
        loop.adhoc('kvm1', INSTANCE, args)
        console.wait_for('hvops-linux-guest ready')
        seeds = [os.path.join(loop.run_dir(host), 'seed', NAME + '.iso') for host in HOSTS]
        assert os.path.exists(seeds[0])
        before = console.lines()
        last_tick = max(int(line.split()[1]) for line in before if line.startswith('tick '))

        moved = loop.migrate('kvm1', 'kvm2')
        assert moved.rc == 0, moved
        assert not os.path.exists(seeds[0]) and os.path.exists(seeds[1])
        assert loop.pids('kvm1') == [] and len(loop.pids('kvm2')) == 1
        done = run_adhoc(loop.inventory, FACTS, {'run_dir': loop.run_dir('kvm2'), 'gather_subset': ['agent']},
                         host='kvm2')
        agent = done.result(host='kvm2')['ansible_facts']['kvm_node']['instances'][NAME]['agent']
        assert agent['status'] == 'ok' and agent['hostname'] == 'mover', agent
        # The same guest goes on counting there: no new boot.
        after = serial_lines(loop.serial('kvm2'), count=3, timeout=10)
        ticks = [int(line.split()[1]) for line in after if line.startswith('tick ')]
        assert ticks and ticks[0] > last_tick, (before[-3:], after)
        assert not any(line.startswith('hvops-linux-guest variant') for line in after)
    finally:
        console.stop()
        loop.destroy()
