"""Hardened nodes (issue 10), tried the way an attacker or a careless operator
would: real QEMU, real socat, real ``ansible`` runs against simulated nodes.

Each test here fails on the collection before the hardening: QEMU ran as
root without a sandbox, accept started what the source's runtime said,
run_dir was chmod-ed whatever it was, and so on.
"""
import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess

import pytest

from tests.harness.ansible_run import run_adhoc
from tests.harness.guest import build_image
from tests.harness.nodes import Pair, free_port
from tests.harness.qemu_procs import pid_alive, qemu_processes_under, wait_until
from tests.harness.raw_qemu import QmpClient
from tests.harness.system import QEMU_USER, give_to_qemu, reachable_dir, require_binary

INSTANCE = 'hvops.kvm.kvm_instance'
MIGRATE = 'hvops.kvm.kvm_migrate'
FACTS = 'hvops.kvm.kvm_node_facts'


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat', 'ip'):
        require_binary(program)


def spec_for(node, image, **extra):
    args = {'name': 'vm1', 'run_dir': node.run_dir, 'memory': 32, 'accel': 'tcg', 'machine': 'pc',
            'disks': [{'path': image, 'interface': 'ide'}]}
    args.update(extra)
    return args


def adhoc(node, args, module=INSTANCE, **kw):
    return run_adhoc(node.inventory, module, args, **kw)


def ok(done):
    assert done.rc == 0, done
    return done.result()


def refused(done, words):
    """A clean failure: the module's own message, no traceback."""
    assert done.rc != 0, done
    result = done.result()
    assert words in result['msg'], result['msg']
    # ansible-core 2.19 marks every failure with exception "(traceback unavailable)":
    # a crash would carry the traceback, or module_stderr.
    assert 'Traceback' not in result.get('exception', '') and 'module_stderr' not in result, result
    return result


def proc_status(pid):
    with open('/proc/%d/status' % pid) as handle:
        return dict(line.split(':', 1) for line in handle.read().splitlines() if ':' in line)


# -- QEMU runs as its own user, in a sandbox -------------------------------------------------
def test_the_guest_runs_as_the_qemu_user_under_seccomp_and_still_stops_cleanly(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started')))
    status = proc_status(started['pid'])
    uid = pwd.getpwnam(QEMU_USER).pw_uid
    assert status['Uid'].split() == [str(uid)] * 4, status['Uid']
    assert status['Seccomp'].strip() == '2', 'a seccomp filter is installed'
    assert status['NoNewPrivs'].strip() == '1'
    assert status['CapEff'].strip() == '0000000000000000'
    argv = started['argv']
    assert argv[argv.index('-runas') + 1] == QEMU_USER
    assert argv[argv.index('-sandbox') + 1] == 'on,obsolete=deny,spawn=deny,resourcecontrol=deny'
    assert '-daemonize' not in argv
    facts = ok(adhoc(node, {'run_dir': node.run_dir}, module=FACTS))['ansible_facts']['kvm_node']
    assert facts['instances']['vm1']['user'] == QEMU_USER
    assert facts['instances']['vm1']['sandboxed'] is True
    assert [p for p in facts['problems'] if 'vm1' in p] == []
    assert os.stat(os.path.join(node.run_dir, 'pid')).st_uid == uid
    assert stat.S_IMODE(os.stat(node.run_dir).st_mode) == 0o711
    for sub in ('ctrl', 'conf', 'lock'):
        info = os.stat(os.path.join(node.run_dir, sub))
        assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o700, sub
    # The guest powers itself off (ACPI): QEMU, as its user, removes its pidfile.
    stopped = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'stopped'}))
    assert stopped['stop_method'] == 'acpi' and stopped['state'] == 'stopped'
    assert not os.path.exists(os.path.join(node.run_dir, 'pid', 'vm1.pid'))


def test_a_guest_run_as_root_is_a_problem_of_the_node(node, guest_image):
    started = ok(adhoc(node, spec_for(node, guest_image('normal'), state='started', run_as='root')))
    assert proc_status(started['pid'])['Uid'].split()[1] == '0'
    assert proc_status(started['pid'])['Seccomp'].strip() == '2', 'root QEMU is sandboxed too'
    assert '-runas' not in started['argv']
    facts = ok(adhoc(node, {'run_dir': node.run_dir, 'run_as': 'root'}, module=FACTS))['ansible_facts']['kvm_node']
    assert facts['instances']['vm1']['user'] == 'root'
    assert [p for p in facts['problems'] if 'vm1 runs as root' in p], facts['problems']


def test_a_missing_qemu_user_is_a_clear_error_and_changes_nothing(node, guest_image):
    before = node.snapshot()
    refused(adhoc(node, spec_for(node, guest_image('normal'), state='started', run_as='hvops-nosuchuser')),
            'run_as user hvops-nosuchuser does not exist')
    assert node.snapshot() == before


def test_a_disk_the_qemu_user_cannot_write_is_refused_before_anything_starts(node, guest_image):
    image = guest_image('normal')
    os.chown(image, 0, 0)
    before = node.snapshot()
    refused(adhoc(node, spec_for(node, image, state='started')), 'not readable and writable by the QEMU user')
    assert node.snapshot() == before
    give_to_qemu(image)
    assert ok(adhoc(node, spec_for(node, image, state='started')))['state'] == 'running'


# -- the target decides what runs on the target ---------------------------------------------
@pytest.fixture(scope='module')
def source():
    """A pair of simulated nodes with the test guest running on src (module-wide:
    every case below only hands a tampered runtime to the target)."""
    made = Pair()
    made.start_guest(build_image('normal'))
    made.prepared = made.ok('src', {'phase': 'prepare'})
    made.marker_dir = reachable_dir('hk-mark-')
    yield made
    made.destroy()
    shutil.rmtree(made.marker_dir, ignore_errors=True)


def evil_script(directory, name, marker):
    path = os.path.join(directory, name)
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\ntouch %s\nexec qemu-system-x86_64 "$@"\n' % marker)
    os.chmod(path, 0o755)
    return path


def tamper(source, case):
    """(runtime, definition, policy, marker, port) with one hostile change."""
    marker = os.path.join(source.marker_dir, 'pwned-%s' % case)
    runtime = dict(source.prepared['runtime'])
    spec = dict(runtime['spec'])
    definition = dict(source.prepared['definition'])
    policy = {'autostart': True}
    port = free_port()
    if case == 'incoming-exec':
        spec['extra_args'] = ['-incoming', 'exec:touch %s' % marker]
    elif case == 'qmp-tcp':
        spec['extra_args'] = ['-qmp', 'tcp:127.0.0.1:%d,server=on,wait=off' % port]
    elif case == 'loader-device':
        definition['extra_args'] = ['-device', 'loader,file=/etc/shadow,addr=0x100000']
    elif case == 'foreign-binary':
        spec['qemu_binary'] = evil_script(source.marker_dir, 'evil.sh', marker)
    elif case == 'bad-mac-type':
        spec['nics'] = [{'type': 'user', 'mac': 5}]
    elif case == 'bad-bridge-type':
        spec['nics'] = [{'type': 'bridge', 'bridge': 5}]
    elif case == 'kernel-shadow':
        spec.update(kernel='/etc/shadow', root='/dev/vda')
    elif case == 'disk-of-the-host':
        spec['disks'] = [dict(spec['disks'][0], path='/etc/shadow')]
    elif case == 'bridge-newline':
        spec['nics'] = [{'type': 'bridge', 'bridge': 'br0\ntouch'}]
    elif case == 'seed-extra-key':
        spec['cloud_init'] = {'user_data': '#cloud-config\n', 'meta_data': 'instance-id: x\n',
                              'network_config': None, 'seed_path': '/etc/shadow'}
    elif case == 'agent-not-bool':
        spec['guest_agent'] = 'yes; touch %s' % marker
    elif case == 'policy-extra-key':
        policy = {'autostart': True, 'run_as': 'root'}
    elif case == 'policy-bad-order':
        policy = {'autostart_order': '1; touch %s' % marker}
    runtime['spec'] = spec
    return runtime, definition, policy, marker, port


@pytest.mark.parametrize('check', [True, False], ids=['check', 'real'])
@pytest.mark.parametrize('case, words', [
    ('incoming-exec', 'extra_args'),
    ('qmp-tcp', 'extra_args'),
    ('loader-device', 'loader'),
    ('foreign-binary', 'qemu_binary'),
    ('bad-mac-type', 'MAC'),
    ('bad-bridge-type', 'bridge name'),
    ('bridge-newline', 'bridge name'),
    ('kernel-shadow', 'not readable by the QEMU user'),
    ('disk-of-the-host', 'not readable and writable by the QEMU user'),
    ('seed-extra-key', 'cloud_init has unknown keys: seed_path'),
    ('agent-not-bool', 'guest_agent must be true or false'),
    ('policy-extra-key', 'policy has unknown keys: run_as'),
    ('policy-bad-order', 'autostart_order must be a whole number'),
])
def test_a_tampered_runtime_starts_nothing_and_runs_nothing(source, case, words, check):
    runtime, definition, policy, marker, port = tamper(source, case)
    before = source.nodes['dst'].snapshot()
    rc, result = source.run('dst', {'phase': 'accept', 'runtime': runtime, 'definition': definition,
                                    'policy': policy}, check=check)
    assert rc != 0, result
    assert words in result['msg'], result['msg']
    assert 'Traceback' not in result.get('exception', '') and 'module_stderr' not in result, result
    assert not os.path.exists(marker), 'the target ran what the source dictated'
    assert source.pids('dst') == []
    assert source.nodes['dst'].snapshot() == before
    probe = socket.socket()
    try:
        assert probe.connect_ex(('127.0.0.1', port)) != 0, 'something listens on the port the source named'
    finally:
        probe.close()


@pytest.mark.parametrize('case, words, check', [
    ('no-map', 'already exists here', True),        # the source's own image, on one file system
    ('no-map', 'already exists here', False),
    ('huge', 'MiB free', True),
    ('huge', 'MiB free', False),
    ('other-path', 'does not describe', False),
    ('odd-size', 'multiple of 512', False),
    ('into-run-dir', 'inside', False),
])
def test_a_copy_migration_target_refuses_before_making_any_image(source, case, words, check):
    """storage: copy with a tampered description of the disks (what the source
    sends) or a map that would overwrite or misplace an image: refused,
    nothing made, nothing started, the source's image untouched."""
    images = reachable_dir('hk-copy-')
    try:
        spec = source.prepared['runtime']['spec']
        disk = spec['disks'][0]['path']
        disks = [{'index': 0, 'path': disk, 'format': spec['disks'][0]['format'],
                  'virtual_size': os.path.getsize(disk), 'readonly': False}]
        storage_map = {os.path.dirname(disk): images}
        if case == 'no-map':
            storage_map = {}
        elif case == 'huge':
            disks[0]['virtual_size'] = 1 << 49
        elif case == 'other-path':
            disks[0]['path'] = '/etc/shadow'
        elif case == 'odd-size':
            disks[0]['virtual_size'] += 1
        elif case == 'into-run-dir':
            storage_map = {os.path.dirname(disk): os.path.join(source.run_dir('dst'), 'ctrl')}
        with open(disk, 'rb') as handle:
            before_image = hashlib.sha256(handle.read()).hexdigest()
        before = source.nodes['dst'].snapshot()
        rc, result = source.run('dst', {'phase': 'accept', 'runtime': source.prepared['runtime'],
                                        'definition': source.prepared['definition'], 'storage': 'copy',
                                        'disks': disks, 'storage_map': storage_map}, check=check)
        assert rc != 0, result
        assert words in result['msg'], result['msg']
        assert os.listdir(images) == []
        assert source.pids('dst') == [] and source.nodes['dst'].snapshot() == before
        with open(disk, 'rb') as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == before_image
    finally:
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.parametrize('check', [True, False], ids=['check', 'real'])
def test_the_target_runs_its_own_binary_and_never_the_sources_argv(source, check):
    """A runtime whose argv is a shell command and whose QEMU binary is a
    script named like QEMU: the target builds its own command line with its
    own binary, and neither runs."""
    marker = os.path.join(source.marker_dir, 'pwned-argv-%s' % check)
    runtime = dict(source.prepared['runtime'])
    runtime['argv'] = ['/bin/sh', '-c', 'touch %s' % marker]
    runtime['spec'] = dict(runtime['spec'], qemu_binary=evil_script(
        source.marker_dir, 'qemu-system-x86_64', marker))
    args = {'phase': 'accept', 'runtime': runtime, 'definition': source.prepared['definition']}
    accepted = source.ok('dst', args, check=check)
    try:
        assert not os.path.exists(marker), 'the target ran the source\'s argv or binary'
        if check:
            assert source.pids('dst') == []
            return
        (pid, argv), = qemu_processes_under(source.run_dir('dst'))
        assert pid == accepted['pid']
        assert argv[0] == subprocess.run(['sh', '-c', 'command -v qemu-system-x86_64'], capture_output=True,
                                         text=True, check=True).stdout.strip()
        assert argv[argv.index('-runas') + 1] == QEMU_USER
    finally:
        if not check:
            source.ok('dst', {'phase': 'finalize', 'success': False})
    assert source.pids('dst') == [] and not os.path.exists(marker)


@pytest.mark.parametrize('address, words', [
    ('::1%x,vnc=[0.0.0.0', 'scope id'),
    ('0.0.0.0', 'every address'),
    ('::', 'every address'),
    ('127.0.0.1,x', 'IPv4 or IPv6'),
])
def test_a_listen_address_that_is_not_one_address_is_refused(source, address, words):
    before = source.nodes['dst'].snapshot()
    rc, result = source.run('dst', {'phase': 'accept', 'runtime': source.prepared['runtime'],
                                    'migration_address': address})
    assert rc != 0 and words in result['msg'], result
    assert source.pids('dst') == [] and source.nodes['dst'].snapshot() == before


def test_listening_on_every_address_needs_an_explicit_yes(source):
    predicted = source.ok('dst', {'phase': 'accept', 'runtime': source.prepared['runtime'],
                                  'migration_address': '0.0.0.0', 'allow_any_address': True}, check=True)
    assert predicted['address'] == '0.0.0.0' and source.pids('dst') == []


# -- run_dir: never another user's, never chmod-ed ------------------------------------------------
def test_run_dir_tmp_is_refused_and_keeps_its_sticky_bit(node, guest_image):
    before = os.stat('/tmp').st_mode
    refused(adhoc(node, spec_for(node, guest_image('normal'), run_dir='/tmp', state='present')),
            'writable by its group or by others')
    assert os.stat('/tmp').st_mode == before and not os.path.exists('/tmp/conf')


def test_a_run_dir_another_user_made_is_refused_and_left_alone(node, guest_image):
    theirs = os.path.join(node.base, 'theirs')
    os.mkdir(theirs, 0o700)
    os.chown(theirs, 65534, 65534)
    refused(adhoc(node, spec_for(node, guest_image('normal'), run_dir=theirs, state='started')),
            'owned by uid 65534')
    assert os.listdir(theirs) == [] and stat.S_IMODE(os.stat(theirs).st_mode) == 0o700
    assert qemu_processes_under(theirs) == []
    link = os.path.join(node.base, 'link')
    os.symlink(theirs, link)
    refused(adhoc(node, spec_for(node, guest_image('normal'), run_dir=link, state='started')), 'symbolic link')


def test_a_run_dir_with_option_syntax_is_refused(node, guest_image):
    bad = os.path.join(node.base, 'a:b!!c')
    refused(adhoc(node, spec_for(node, guest_image('normal'), run_dir=bad, state='started')), 'run_dir')
    assert not os.path.exists(bad)


# -- arguments reach QEMU as given --------------------------------------------------------------
def test_dollar_words_reach_qemu_unexpanded(node):
    """kernel_args 'x=${HOME}' reaches QEMU as written (ansible's run_command
    would expand it), and the argv the task returns is what QEMU got."""
    kernel = os.path.join(node.base, 'kernel.bin')
    with open(kernel, 'wb') as handle:
        handle.write(bytes(4096))     # QEMU loads anything as a kernel; paused, none of it runs
    started = ok(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'memory': 32, 'accel': 'tcg',
                              'machine': 'pc', 'kernel': kernel, 'root': '/dev/vda',
                              'kernel_args': 'x=${HOME} y=$USER z=~', 'state': 'paused'}))
    with open('/proc/%d/cmdline' % started['pid'], 'rb') as handle:
        argv = [word.decode() for word in handle.read().split(b'\0')][:-1]
    assert argv[argv.index('-append') + 1] == 'root=/dev/vda ro console=ttyS0,115200 x=${HOME} y=$USER z=~'
    assert argv == started['argv']


# -- damaged state files and impossible options: clean errors ------------------------------------
@pytest.mark.parametrize('content, words', [
    ('{"memory": 32,', 'damaged'),
    ('[1, 2]', 'not in a format'),
    ('{"memory": 32, "disks": 5}', 'disks must be a list'),
])
def test_a_damaged_definition_is_a_clear_error(node, guest_image, content, words):
    ok(adhoc(node, spec_for(node, guest_image('normal'), state='present')))
    with open(os.path.join(node.state_dir, 'guests', 'vm1.json'), 'w') as handle:
        handle.write(content)
    before = node.snapshot()
    refused(adhoc(node, {'name': 'vm1', 'run_dir': node.run_dir, 'state': 'started'}), words)
    assert node.snapshot() == before
    facts = ok(adhoc(node, {'run_dir': node.run_dir}, module=FACTS))['ansible_facts']['kvm_node']
    if words != 'disks must be a list':
        assert facts['instances']['vm1']['state'] == 'unknown'
        assert [p for p in facts['problems'] if 'vm1' in p], facts['problems']


@pytest.mark.parametrize('value', ['inf', 'nan', '-1', '0'])
def test_a_monitor_timeout_that_is_not_a_time_is_refused(node, guest_image, value):
    refused(adhoc(node, spec_for(node, guest_image('normal'), state='present', monitor_timeout=value)),
            'monitor_timeout')
    assert not os.path.exists(node.run_dir) and not os.path.exists(node.state_dir)


@pytest.mark.parametrize('extra, words', [
    ({'memory': 1000000000000}, 'memory'),
    ({'memory': 8 * 1024 * 1024}, 'more than this node has'),
    ({'vcpus': 4096}, 'vcpus'),
    ({'vcpus': 64}, 'CPUs of this node'),
    ({'cpu_model': 'nosuchcpu'}, 'not known to this QEMU'),
    ({'nics': [{'type': 'bridge', 'bridge': 'hknobr0'}]}, 'bridge hknobr0 does not exist'),
    ({'qemu_binary': '/bin/true'}, 'qemu_binary'),
    ({'extra_args': ['-pidfile', '/tmp/other.pid']}, 'extra_args'),
    ({'extra_args': ['-runas', 'root']}, 'extra_args'),
    ({'vnc_bind_address': '::1%x,vnc=[0.0.0.0'}, 'scope id'),
    ({'vnc_bind_address': '127.0.0.1', 'vnc_password': ''}, 'vnc_password'),
    ({'vnc_bind_address': '127.0.0.1', 'vnc_password': 'ninechars'}, 'vnc_password'),
])
@pytest.mark.parametrize('state', ['present', 'started'])
def test_a_spec_this_host_cannot_run_stores_nothing(node, guest_image, extra, words, state):
    done = adhoc(node, spec_for(node, guest_image('normal'), state=state, **extra))
    result = refused(done, words)
    assert 'ninechars' not in done.stdout + done.stderr and 'ninechars' not in str(result)
    assert not os.path.exists(node.run_dir) and not os.path.exists(node.state_dir), 'nothing may be written for a spec that is refused'


# -- VNC passwords take effect or say they do not -----------------------------------------------
def vnc_auth(node):
    client = QmpClient(os.path.join(node.run_dir, 'ctrl', 'vm1.qmp'))
    try:
        return client.execute('query-vnc')['auth'], client.execute('query-status')['status']
    finally:
        client.close()


def test_a_vnc_password_added_to_a_running_guest_is_pending_until_a_restart(node, guest_image):
    display = 40 + os.getpid() % 50
    args = spec_for(node, guest_image('normal'), state='started', vnc_bind_address='127.0.0.1',
                    vnc_display=display)
    ok(adhoc(node, args))
    assert vnc_auth(node) == ('none', 'running')
    added = ok(adhoc(node, dict(args, vnc_password='s3cret')))
    assert added['changed'] is True and added['pending_restart'] is True
    assert [w for w in added.get('warnings', []) if 'NO password' in w], added
    again = ok(adhoc(node, dict(args, vnc_password='s3cret')))
    assert again['changed'] is False and again['pending_restart'] is True, 'never a silent ok'
    assert [w for w in again.get('warnings', []) if 'NO password' in w], again
    restarted = ok(adhoc(node, dict(args, state='restarted')))
    assert restarted['state'] == 'running' and restarted['pending_restart'] is False
    assert vnc_auth(node) == ('vnc', 'running'), 'the restart applies the password and lets the guest run'
    assert ok(adhoc(node, dict(args, vnc_password='s3cret')))['pending_restart'] is False


def test_nothing_is_left_when_a_started_guest_is_removed(node, guest_image):
    args = spec_for(node, guest_image('normal'), state='started')
    started = ok(adhoc(node, args))
    ok(adhoc(node, dict(args, state='absent')))
    wait_until(lambda: not pid_alive(started['pid']), 10)
    assert node.instance_files() == []
