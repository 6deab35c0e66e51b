"""kvm_instance through real ansible-playbook / ansible runs, real QEMU, real socat."""
import json
import os
import pty
import select
import shlex
import signal
import subprocess
import time

import pytest

from tests.harness import VENV_BIN
from tests.harness.ansible_run import run_adhoc, run_playbook, write_playbook
from tests.harness.qemu_procs import pid_alive, qemu_processes_under, serial_lines, wait_until
from tests.harness.raw_qemu import QmpClient

MODULE = 'hvops.kvm.kvm_instance'


def spec_for(node, image, **extra):
    args = {'name': 'vm1', 'run_dir': node.run_dir, 'state_dir': node.state_dir, 'memory': 32, 'accel': 'tcg',
            'machine': 'pc',
            'disks': [{'path': image, 'interface': 'ide'}]}
    args.update(extra)
    return args


def adhoc(node, args, **kw):
    return run_adhoc(node.inventory, MODULE, args, **kw)


def ok(result):
    assert result.rc == 0, result
    return result.result()


def test_lifecycle_every_state_check_mode_first_then_idempotent(node, guest_image):
    image = guest_image('normal')
    steps = [
        ('present', 'stopped', ['define']),
        ('started', 'running', ['start']),
        ('paused', 'paused', ['pause']),
        ('started', 'running', ['resume']),
        ('restarted', 'running', ['stop', 'start']),
        ('stopped', 'stopped', ['stop']),
        ('paused', 'paused', ['start_paused']),
        ('absent', 'absent', ['stop', 'undefine']),  # never ran: forced off
    ]
    for state, final, actions in steps:
        args = spec_for(node, image, state=state)
        before = node.snapshot()
        predicted = ok(adhoc(node, args, check=True))
        assert predicted['changed'] is True, (state, predicted)
        assert predicted['actions'] == actions, (state, predicted)
        assert node.snapshot() == before, 'check mode touched something for %s' % state
        real = adhoc(node, args)
        assert real.rc == 0, (state, real)
        real = real.result()
        assert real['changed'] is True and real['actions'] == actions, (state, real)
        assert real['state'] == final, (state, real)
        if final in ('running', 'paused'):
            assert real['pid'] and pid_alive(real['pid'])
            assert real['argv'][0].endswith('qemu-system-x86_64')
            assert real['accel'] == 'tcg'
        else:
            assert real['pid'] is None
        if state != 'restarted':
            again = ok(adhoc(node, args))
            assert again['changed'] is False and again['actions'] == [], (state, again)
            again_check = ok(adhoc(node, args, check=True))
            assert again_check['changed'] is False, (state, again_check)
    assert qemu_processes_under(node.run_dir) == []
    assert os.listdir(os.path.join(node.run_dir, 'conf')) == []
    assert os.listdir(os.path.join(node.state_dir, 'guests')) == []


def test_started_guest_ticks_and_stops_gracefully(node, guest_image):
    first = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    assert first['sockets']['serial'].endswith('/ctrl/vm1.serial')
    assert 'UNIX-CONNECT:%s' % first['sockets']['serial'] in first['console_command']
    assert 'escape=0x1d' in first['console_command']
    lines = serial_lines(first['sockets']['serial'], count=5)
    ticks = [int(line.split()[1]) for line in lines if line.startswith('tick ')]
    assert len(ticks) >= 3 and all(b == a + 1 for a, b in zip(ticks, ticks[1:])), lines
    stopped = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped'}))
    assert stopped['stop_method'] == 'acpi' and stopped['state'] == 'stopped'
    assert not pid_alive(first['pid'])
    assert stopped['definition']['memory'] == 32, 'the definition is kept'


def test_stubborn_guest_is_forced_only_when_allowed(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('stubborn'), state='started')))
    refused = adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped', 'shutdown_timeout': 2})
    assert refused.rc != 0
    failure = refused.result()
    assert 'did not power off' in failure['msg'] and 'force' in failure['msg']
    assert [p for p, _argv in qemu_processes_under(node.run_dir)] == [started['pid']], 'guest must keep running'
    forced = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped',
                             'shutdown_timeout': 2, 'force': True}))
    assert forced['stop_method'] == 'forced'
    assert qemu_processes_under(node.run_dir) == []
    killed = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'restarted'}))
    stop_kill = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped', 'stop_mode': 'kill'}))
    assert killed['state'] == 'running' and stop_kill['stop_method'] == 'forced'


def test_restart_keeps_the_same_argv_and_reboots_the_guest(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    restarted = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'restarted'}))
    assert restarted['argv'] == started['argv']
    assert restarted['pid'] != started['pid']
    assert not pid_alive(started['pid'])
    assert [p for p, _argv in qemu_processes_under(node.run_dir)] == [restarted['pid']]
    assert any(line.startswith('tick ') for line in serial_lines(restarted['sockets']['serial'], count=3))


def test_spec_change_on_a_running_guest_is_reported_and_applied_on_restart(node, guest_image):
    image = guest_image('normal')
    ok(adhoc(node, spec_for(node, image, state='started')))
    changed = adhoc(node, spec_for(node, image, state='started', memory=48), diff=True)
    result = ok(changed)
    assert result['changed'] is True and result['actions'] == ['define']
    assert result['pending_restart'] is True
    assert result['diff']['before']['definition']['memory'] == 32
    assert result['diff']['after']['definition']['memory'] == 48
    assert '-m' in result['argv'] and result['argv'][result['argv'].index('-m') + 1] == '32M'
    assert any('restarted' in w for w in result.get('warnings', []))
    no_diff = ok(adhoc(node, spec_for(node, image, state='started', memory=48)))
    assert 'diff' not in no_diff and no_diff['changed'] is False
    applied = ok(adhoc(node, spec_for(node, image, state='restarted', memory=48)))
    assert applied['argv'][applied['argv'].index('-m') + 1] == '48M'
    assert applied['pending_restart'] is False


def test_a_reused_pid_is_never_signalled(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    os.kill(started['pid'], signal.SIGKILL)
    wait_until(lambda: not pid_alive(started['pid']), 5)
    bystander = subprocess.Popen(['sleep', '60'])
    try:
        pidfile = os.path.join(node.run_dir, 'pid', 'vm1.pid')
        with open(pidfile, 'w') as handle:
            handle.write('%d\n' % bystander.pid)
        seen = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped'}, check=True))
        assert seen['state'] == 'crashed' and seen['actions'] == ['clean']
        cleaned = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped',
                                  'stop_mode': 'kill'}))
        assert cleaned['changed'] is True and cleaned['state'] == 'stopped'
        assert bystander.poll() is None, 'an unrelated process was signalled'
        assert not os.path.exists(pidfile)
    finally:
        bystander.kill()
        bystander.wait()


def test_two_concurrent_runs_are_serialised(node, guest_image):
    args = spec_for(node, guest_image('normal'), state='started')
    ok(adhoc(node, dict(args, state='present')))
    procs = [subprocess.Popen(
        [os.path.join(VENV_BIN, 'ansible'), 'localhost',
         '-i', node.inventory, '-m', MODULE, '-a', json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node.env()) for _run in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    changed = [json.loads(o[o.index('{'):])['plays'][0]['tasks'][0]['hosts']['localhost']['changed']
               for o, _err in outs]
    assert sorted(changed) == [False, True]
    assert len(qemu_processes_under(node.run_dir)) == 1


def test_playbook_run_and_diff_only_under_diff(node, guest_image, tmp_path):
    task = {'name': 'guest', MODULE: spec_for(node, guest_image('normal'), state='started'),
            'register': 'guest'}
    book = write_playbook(str(tmp_path / 'play.yml'), [task])
    plain = run_playbook(node.inventory, book)
    assert plain.rc == 0, plain
    assert 'diff' not in plain.result() and plain.result()['changed'] is True
    again = run_playbook(node.inventory, book, diff=True)
    assert again.rc == 0 and again.result()['changed'] is False
    assert again.result()['diff']['before'] == again.result()['diff']['after']


@pytest.mark.parametrize('bad, words', [
    ({'name': '../evil'}, 'invalid instance name'),
    ({'name': 'a/b'}, 'invalid instance name'),
    ({'memory': 0}, 'memory'),
    ({'vcpus': -1}, 'vcpus'),
    ({'kernel': 'vmlinuz', 'root': '/dev/vda'}, 'absolute'),
    ({'kernel': '/nonexistent/vmlinuz', 'root': '/dev/vda'}, 'does not exist'),
    ({'kernel': '/boot', 'initrd': '/nonexistent/initrd', 'root': '/dev/vda'}, 'does not exist'),
    ({'kernel': '/etc/hostname'}, 'root'),
    ({'disks': [{'path': '/nonexistent/disk.img'}]}, 'does not exist'),
    ({'nics': [{'mac': 'zz:54:00:00:00:01'}]}, 'MAC'),
    ({'vnc_bind_address': 'VNC_BIND_ADDRESS'}, 'VNC bind address'),
    ({'disks': [{'path': '/etc/hostname', 'interface': 'floppy'}]}, 'interface'),
    ({'disks': [{'path': '/etc/hostname', 'format': 'vmdk'}]}, 'format'),
    ({'machine': 'no-such-machine'}, 'machine type'),
])
def test_bad_input_is_refused_and_changes_nothing(node, guest_image, bad, words):
    args = spec_for(node, guest_image('normal'), state='started')
    args.update(bad)
    result = adhoc(node, args)
    assert result.rc != 0
    assert words in result.result()['msg']
    assert not os.path.exists(node.run_dir) and not os.path.exists(node.state_dir), 'bad input created files'
    assert qemu_processes_under(node.run_dir) == []


def test_a_second_instance_on_the_same_disk_is_refused(node, guest_image):
    image = guest_image('normal')
    ok(adhoc(node, spec_for(node, image, state='present')))
    before = node.snapshot()
    other = adhoc(node, spec_for(node, image, name='vm2', state='started'))
    assert other.rc != 0 and 'already used by instance vm1' in other.result()['msg']
    assert node.snapshot() == before


def test_stopped_instance_is_named_only(node, guest_image):
    ok(adhoc(node, spec_for(node, guest_image('normal'), state='present')))
    started = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir}))
    assert started['state'] == 'running' and started['definition']['memory'] == 32
    missing = adhoc(node, {'name': 'never-defined', 'run_dir': node.run_dir})
    assert missing.rc != 0 and 'no stored definition' in missing.result()['msg']


@pytest.mark.kvm
def test_auto_accelerator_picks_kvm_when_usable(node, guest_image, kvm_usable):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started', accel='auto')))
    assert started['accel'] == 'kvm'
    assert started['argv'][started['argv'].index('-accel') + 1] == 'kvm'
    stopped = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped',
                              'shutdown_timeout': 20, 'force': True}))
    assert stopped['state'] == 'stopped'


def test_a_guest_that_powered_itself_off_is_stopped_not_crashed(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    monitor = QmpClient(started['sockets']['qmp'])
    monitor.execute('system_powerdown')
    monitor.close()
    wait_until(lambda: not pid_alive(started['pid']), 10)
    seen = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped'}))
    assert seen['state'] == 'stopped' and seen['changed'] is False
    again = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'started'}))
    assert again['state'] == 'running' and again['actions'] == ['start']


def test_vnc_password_is_set_through_the_monitor_and_never_shown(node, guest_image):
    secret = 'pw-%d' % os.getpid()
    display = 100 + os.getpid() % 500
    args = spec_for(node, guest_image('normal'), state='started', vnc_bind_address='127.0.0.1',
                    vnc_display=display, vnc_password=secret)
    started = adhoc(node, args)
    assert started.rc == 0, started
    assert secret not in started.stdout and secret not in started.stderr
    result = started.result()
    assert '127.0.0.1:%d,password=on' % display in result['argv']
    monitor = QmpClient(result['sockets']['qmp'])
    try:
        vnc = monitor.execute('query-vnc')
        status = monitor.execute('query-status')
    finally:
        monitor.close()
    assert vnc['enabled'] is True and vnc['auth'] == 'vnc' and vnc['service'] == str(5900 + display)
    assert status['status'] == 'running', 'the guest is held only until the password is set'
    password_file = os.path.join(node.state_dir, 'guests', 'vm1.vncpass')
    assert oct(os.stat(password_file).st_mode & 0o777) == '0o600'
    again = adhoc(node, args)
    assert again.rc == 0 and again.result()['changed'] is False


@pytest.fixture
def bridge():
    """A bridge of the test's own, with no address and no uplink: nothing leaves it."""
    name = 'hvkt%d' % (os.getpid() % 100000)
    subprocess.run(['ip', 'link', 'add', name, 'type', 'bridge'], check=True)
    yield name
    subprocess.run(['ip', 'link', 'del', name], check=False)


def bridge_ports(name):
    out = subprocess.run(['ip', '-j', 'link', 'show', 'master', name], check=True,
                         capture_output=True, text=True).stdout
    return [link['ifname'] for link in json.loads(out or '[]')]


def link_info(name):
    out = subprocess.run(['ip', '-j', '-d', 'link', 'show', 'dev', name], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]


def test_a_bridged_nic_gets_a_tap_on_the_bridge_made_by_the_library(node, guest_image, bridge):
    """No if-up script (QEMU's sandbox denies spawning): the library makes a
    tap on the bridge before QEMU starts, QEMU opens it by name, and the tap
    goes with the instance."""
    args = spec_for(node, guest_image('normal'), state='started',
                    nics=[{'type': 'bridge', 'bridge': bridge, 'mac': '52:54:00:aa:bb:01'}])
    started = ok(adhoc(node, args))
    netdev = started['argv'][started['argv'].index('-netdev') + 1]
    ports = bridge_ports(bridge)
    assert len(ports) == 1, ports
    tap = ports[0]
    assert netdev == 'tap,id=net0,ifname=%s,script=no,downscript=no' % tap
    assert len(tap) <= 15 and tap.startswith('hk')
    info = link_info(tap)
    assert info['address'] == 'fe:54:00:aa:bb:01', 'the host end does not carry the guest\'s MAC'
    assert info['linkinfo']['info_kind'] == 'tun'
    assert not os.path.exists(os.path.join(node.run_dir, 'ifup')), 'no script is written anywhere'
    stopped = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped'}))
    assert stopped['stop_method'] == 'acpi'
    wait_until(lambda: bridge_ports(bridge) == [], 10)
    assert not os.path.exists('/sys/class/net/%s' % tap), 'the tap goes with the instance'


def test_a_killed_guest_leaves_its_tap_until_it_is_cleaned_up(node, guest_image, bridge):
    args = spec_for(node, guest_image('normal'), state='started',
                    nics=[{'type': 'bridge', 'bridge': bridge}])
    started = ok(adhoc(node, args))
    tap = bridge_ports(bridge)[0]
    os.kill(started['pid'], signal.SIGKILL)
    wait_until(lambda: not pid_alive(started['pid']), 10)
    assert os.path.exists('/sys/class/net/%s' % tap), 'a persistent tap outlives a killed QEMU'
    again = ok(adhoc(node, args))
    assert again['actions'] == ['start'] and again['state'] == 'running'
    assert bridge_ports(bridge) == [tap], 'the stale tap was replaced by a fresh one of the same name'
    ok(adhoc(node, dict(args, state='absent')))
    assert bridge_ports(bridge) == [] and not os.path.exists('/sys/class/net/%s' % tap)


def test_console_command_shows_the_serial_and_ctrl_bracket_leaves(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    argv = shlex.split(started['console_command'])
    pid, fd = pty.fork()
    if pid == 0:    # the child: the operator's terminal runs the console
        os.execvp(argv[0], argv)
    exited = []
    try:
        seen = b''
        deadline = time.monotonic() + 10
        while b'tick ' not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 4096)
        assert b'tick ' in seen, seen
        os.write(fd, b'\x1d')    # Ctrl-]
        wait_until(lambda: exited.append(os.waitpid(pid, os.WNOHANG)) or exited[-1][0] == pid, 5)
        assert os.waitstatus_to_exitcode(exited[-1][1]) == 0
    finally:
        if not exited or exited[-1][0] != pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert pid_alive(started['pid']), 'leaving the console leaves the guest running'
