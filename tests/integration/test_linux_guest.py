"""The Linux test guest (tests/linux_guest/) in real QEMU under TCG: its
console contract, the NoCloud seed, qemu-ga, dropbear and power-off, and the
disk-writer variant. (The agent-silent and agent-flood variants are met through
the collection, in test_guest_agent.py.)"""
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from tests.harness import VENV_BIN
from tests.harness.ansible_run import ansible_env
from tests.harness.linux_guest import GuestAgentClient, build_linux_guest, qemu_args, seed_iso
from tests.harness.raw_qemu import RawQemu
from tests.harness.system import require_binary

BANNER = r'^hvops-linux-guest variant=(\S+) start=(\d+)$'
READY = r'^hvops-linux-guest ready$'
BOOT_TIMEOUT = 40.0     # about 4 s to ready on an idle 2-core machine
MEMORY = 128
MAC0, MAC1 = '52:54:00:ab:cd:01', '52:54:00:ab:cd:02'

META_DATA = 'instance-id: iid-linux-1\nlocal-hostname: meta-name\n'
USER_DATA = '''#cloud-config
hostname: lg-seeded
fqdn: lg-seeded.example.test
ssh_authorized_keys:
  - {key}
users:
  - default
  - name: root
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJb0bdM5PUMq2sA8HwqV0KCvzmT3iW4DqJ5ZTQ8YxXl1 second@example
'''
NETWORK_CONFIG = '''version: 2
ethernets:
  nic0:
    match:
      macaddress: "{mac0}"
    set-name: eth0
    addresses: [10.0.2.15/24]
    gateway4: 10.0.2.2
  eth1:
    addresses:
      - 192.168.77.2/24
'''.format(mac0=MAC0)


def short_dir(prefix):
    """A directory under /tmp (unix socket paths stay short), mode 0711."""
    path = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    os.chmod(path, 0o711)
    return path


def free_tcp_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def boot(workdir, variant='normal', append_extra='', agent=True, extra_args=()):
    """A started RawQemu with the Linux guest of variant; the agent's socket,
    if any, is workdir/qga.sock."""
    guest = build_linux_guest(variant)
    agent_socket = os.path.join(workdir, 'qga.sock') if agent else None
    qemu = RawQemu(workdir, None, memory=MEMORY, extra_args=qemu_args(guest, append_extra, agent_socket) + list(extra_args))
    return qemu.start()


def console(qemu, pattern, timeout=BOOT_TIMEOUT):
    """The first match of pattern on the console (AssertionError after timeout)."""
    return qemu.serial.wait_for(pattern, timeout)[1]


def agent(workdir):
    return GuestAgentClient(os.path.join(workdir, 'qga.sock'))


def assert_powered_off(qemu, message, timeout=30.0):
    console(qemu, '^%s$' % message, timeout)
    assert qemu.wait_exit(timeout) == 0, qemu.stderr()


@pytest.fixture(scope='module')
def prerequisites():
    for program in ('qemu-system-x86_64', 'xorriso', 'ssh-keygen', 'ssh', 'apt-get', 'dpkg-deb'):
        require_binary(program)
    return build_linux_guest('normal')


@pytest.fixture(scope='module')
def seeded(prerequisites):
    """One normal guest for the module, seeded (two NICs, key, hostname) with
    user networking forwarding a local port to its sshd. Tests only look at it."""
    workdir = short_dir('hlg-')
    key = os.path.join(workdir, 'id_ed25519')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'tester@hvops', '-f', key], check=True)
    with open(key + '.pub') as handle:
        public = handle.read().strip()
    seed = seed_iso(os.path.join(workdir, 'seed.iso'), META_DATA, USER_DATA.format(key=public), NETWORK_CONFIG)
    port = free_tcp_port()
    qemu = boot(workdir, extra_args=[
        '-drive', 'file=%s,format=raw,if=virtio,readonly=on' % seed,
        '-netdev', 'user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22' % port, '-device', 'virtio-net-pci,netdev=n0,mac=' + MAC0,
        '-netdev', 'user,id=n1,net=192.168.77.0/24', '-device', 'virtio-net-pci,netdev=n1,mac=' + MAC1])
    try:
        console(qemu, READY)
        yield {'qemu': qemu, 'workdir': workdir, 'key': key, 'port': port}
    finally:
        qemu.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def workdir():
    path = short_dir('hlg-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def qemus():
    """A list to put RawQemus in; each is killed at teardown."""
    started = []
    yield started
    for qemu in started:
        qemu.stop()


# ------------------------------------------------------------ the builder

def test_build_is_cached_and_variants_differ(prerequisites):
    first = build_linux_guest('normal')
    mtime = os.stat(first.initrd).st_mtime_ns
    assert build_linux_guest('normal') == first
    assert os.stat(first.initrd).st_mtime_ns == mtime, 'a second build rebuilt the initrd'
    silent = build_linux_guest('agent-silent')
    assert silent.kernel == first.kernel and silent.initrd != first.initrd
    assert os.path.basename(silent.initrd).startswith('initrd-agent-silent-')
    for path in first + silent:
        assert os.stat(path).st_mode & 0o777 == 0o644, path


# ------------------------------------------------------------ a seeded guest

def test_console_contract_of_a_seeded_guest(seeded):
    lines = seeded['qemu'].serial.lines
    ready = lines.index('hvops-linux-guest ready')
    assert re.match(BANNER, lines[0]) and lines[0].split()[1] == 'variant=normal', lines[:3]
    boot_lines = [line for line in lines[1:ready] if not line.startswith('tick ')]
    assert boot_lines == [
        'cloud-init: instance-id=iid-linux-1',
        'cloud-init: hostname=lg-seeded',
        'cloud-init: ssh-key=ssh-ed25519 tester@hvops',
        'cloud-init: ssh-key=ssh-ed25519 second@example',
        'cloud-init: address=eth0 10.0.2.15/24',
        'cloud-init: address=eth1 192.168.77.2/24',
        'agent: started /dev/vport0p1',
        'sshd: started',
    ], lines[:ready + 1]


def test_ticks_count_up_from_start(seeded):
    qemu = seeded['qemu']
    start = int(re.match(BANNER, qemu.serial.lines[0]).group(2))
    index, _match = qemu.serial.wait_for(r'^tick %d$' % (start + 2), 10)
    ticks = [int(line.split()[1]) for line in qemu.serial.lines[:index + 1] if line.startswith('tick ')]
    assert ticks == list(range(start, start + 3)), qemu.serial.lines


def test_agent_answers(seeded):
    client = agent(seeded['workdir'])
    try:
        assert client.sync(4242) == 4242
        assert client.execute('guest-get-host-name') == {'host-name': 'lg-seeded'}
        osinfo = client.execute('guest-get-osinfo')
        assert osinfo['id'] == 'hvops-test' and osinfo['kernel-release'].endswith('-cloud-amd64'), osinfo
        interfaces = dict((nic['name'], nic) for nic in client.execute('guest-network-get-interfaces'))
        assert interfaces['eth0']['hardware-address'] == MAC0, interfaces
        addresses = [(a['ip-address'], a['prefix']) for a in interfaces['eth0'].get('ip-addresses', [])]
        assert ('10.0.2.15', 24) in addresses, interfaces
    finally:
        client.close()


def test_ansible_raw_over_the_guests_sshd(seeded):
    argv = [os.path.join(VENV_BIN, 'ansible'), 'all', '-i', '127.0.0.1,', '-m', 'raw', '-a', 'hostname',
            '-u', 'root', '--private-key', seeded['key'], '-e', 'ansible_port=%d' % seeded['port'],
            '--ssh-common-args=-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no']
    done = subprocess.run(argv, env=ansible_env({'ANSIBLE_STDOUT_CALLBACK': 'minimal'}), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120, check=False)
    output = done.stdout.decode(errors='replace')
    assert done.returncode == 0 and 'lg-seeded' in output, output


# ------------------------------------------------------------ power-off and variants

def test_no_seed_cmdline_address_and_guest_shutdown(prerequisites, workdir, qemus):
    qemus.append(boot(workdir, append_extra='hvops.ip=10.0.2.15/24',
                      extra_args=['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0']))
    qemu = qemus[-1]
    console(qemu, READY)
    assert 'cloud-init: no seed' in qemu.serial.lines
    assert 'cmdline: address=eth0 10.0.2.15/24' in qemu.serial.lines
    assert 'sshd: started' not in qemu.serial.lines
    client = agent(workdir)
    try:
        client.execute('guest-shutdown', reply=False)
        assert_powered_off(qemu, 'powerdown by agent')
    finally:
        client.close()


def test_disk_writer(prerequisites, workdir, qemus):
    disk = os.path.join(workdir, 'data.img')
    with open(disk, 'wb') as handle:
        handle.truncate(1024 * 1024)
    qemus.append(boot(workdir, 'disk-writer', agent=False,
                      extra_args=['-drive', 'file=%s,format=raw,if=virtio' % disk]))
    qemu = qemus[-1]
    console(qemu, READY)
    assert 'disk: target /dev/vda blocks=256' in qemu.serial.lines
    assert 'agent: no channel' in qemu.serial.lines
    console(qemu, r'^disk: wrote 3$', 20)
    qemu.qmp.execute('system_powerdown')
    assert_powered_off(qemu, 'powerdown by acpi')
    with open(disk, 'rb') as handle:
        blocks = [handle.read(4096) for _block in range(3)]
    for number, block in enumerate(blocks, 1):
        assert block.startswith(b'hvops-disk-writer %d\n' % number), block[:40]
