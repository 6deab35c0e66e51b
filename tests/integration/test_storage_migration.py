"""Live migration with local disks (kvm_migrate's ``storage: copy``) over the
two-host lab, with real QEMU, real qemu-img, real NBD and mirror jobs, and
real ansible runs over the lab's SSH.

The guest is the Linux test guest's disk-writer variant (tests/linux_guest):
every second it writes block N of its disk with ``hvops-disk-writer N`` and
prints ``disk: wrote N``. Its disk lies in a directory of kvm-a's; the lab's
hosts share one file system, so ``storage_map`` puts the target's images in a
directory of kvm-b's, as an operator with different storage paths would.

* The phases one by one, over TLS. Between accept and migrate, two rogue NBD
  clients in kvm-a's namespace try to write into the target's export before
  the source does: one without TLS, one with a valid certificate of the
  lab's CA for a third node; the target refuses both. Between migrate and
  finalize, with the
  source stopped for good (postmigrate) and the target not yet resumed,
  ``qemu-img compare`` finds both images identical; then the guest runs on
  kvm-b, its tick counter and its disk counter going on, from the image in
  kvm-b's directory, and the source's image stays (until asked otherwise).
* Faults during the copy through playbooks/migrate.yml, each with a disk
  holding random data, copied slowly (storage_bandwidth_mib): the target's
  QEMU killed, the link cut, and the target's QEMU stopped (SIGSTOP: the
  mirror stalls). Each leaves the guest running on kvm-a with its disk, its
  disk counter going on, and nothing of it on kvm-b: no QEMU, no image, no
  files.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from tests.harness import REPO
from tests.harness.ansible_run import run_adhoc, run_playbook
from tests.harness.lab import clear_guests, inventory_with_tls
from tests.harness.linux_guest import build_linux_guest
from tests.harness.qemu_procs import SerialRecorder, qemu_processes_under
from tests.harness.raw_qemu import QmpClient
from tests.harness.system import give_to_qemu, require_binary
from tests.harness.tls_pki import Pki

pytestmark = pytest.mark.lab

NAME = 'copy1'
MIGRATE_BOOK = os.path.join(REPO, 'playbooks', 'migrate.yml')
MIB = 1024 * 1024


@pytest.fixture(scope='module')
def setting(lab):
    """The lab's inventory with TLS, the guest's kernel and initrd, and a
    directory of each host's for local images."""
    for program in ('qemu-system-x86_64', 'qemu-img', 'socat'):
        require_binary(program)
    pki = Pki()
    base = os.path.join(lab.base, 'local-%d' % os.getpid())
    dirs = dict((host, os.path.join(base, host)) for host in ('kvm-a', 'kvm-b'))
    for path in [base] + list(dirs.values()):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o711)
    kernel, initrd = build_linux_guest('disk-writer')
    try:
        yield {'inventory': inventory_with_tls(lab, pki), 'pki': pki, 'kernel': kernel, 'initrd': initrd, 'dirs': dirs,
               'tls_dirs': dict((host, os.path.join(pki.base, 'node-%s-ca-hvops-lab-ca' % host))
                                for host in dirs)}
    finally:
        clear_guests(lab, [NAME])
        shutil.rmtree(base, ignore_errors=True)
        pki.destroy()


def make_image(path, fmt, size_mib, random_mib=0):
    """A new image for the QEMU user; its first random_mib MiB random data."""
    if os.path.exists(path):
        os.unlink(path)
    if random_mib:
        raw = path + '.raw'
        with open(raw, 'wb') as handle:
            handle.write(os.urandom(random_mib * MIB))
            handle.truncate(size_mib * MIB)
        subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', fmt, raw, path], check=True)
        os.unlink(raw)
    else:
        subprocess.run(['qemu-img', 'create', '-q', '-f', fmt, path, '%dM' % size_mib], check=True)
    return give_to_qemu(path)


def start_guest(lab, setting, disk, fmt):
    """The disk-writer guest on kvm-a; its console recorder once it writes."""
    host = lab.host('kvm-a')
    console = SerialRecorder(os.path.join(host.run_dir, 'ctrl', NAME + '.serial'))
    started = run_adhoc(setting['inventory'], 'hvops.kvm.kvm_instance', {
        'name': NAME, 'run_dir': host.run_dir, 'state_dir': host.state_dir, 'memory': 128, 'accel': 'tcg',
        'machine': 'pc', 'state': 'started', 'kernel': setting['kernel'], 'initrd': setting['initrd'],
        'root': '/dev/ram0', 'disks': [{'path': disk, 'format': fmt}]}, host='kvm-a')
    assert started.rc == 0, started.result(host='kvm-a')
    console.wait_for('disk: wrote 2', 60)
    return console


def last_write(console):
    numbers = [int(line.split()[2]) for line in console.lines() if line.startswith('disk: wrote ')]
    return numbers[-1] if numbers else 0


def wait_write_after(console, number, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if last_write(console) > number:
            return last_write(console)
        time.sleep(0.2)
    raise AssertionError('no disk write after %d within %d s:\n%s' % (number, timeout, '\n'.join(console.lines()[-20:])))


def qmp_of(host):
    return QmpClient(os.path.join(host.run_dir, 'ctrl', NAME + '.qmp'))


def nothing_on(host, image):
    """Assert that nothing of the guest is left on host: no QEMU, no image, no file."""
    assert qemu_processes_under(host.run_dir) == []
    assert not os.path.exists(image), image
    left = [os.path.join(sub, entry) for sub in ('pid', 'ctrl', 'conf')
            for entry in os.listdir(os.path.join(host.run_dir, sub)) if entry.startswith(NAME + '.')]
    assert left == []
    assert not os.path.exists(os.path.join(host.state_dir, 'guests', NAME + '.json'))


def test_the_phases_over_tls_leave_identical_images_and_the_guest_writing_on(lab, setting):
    host_a, host_b = lab.host('kvm-a'), lab.host('kvm-b')
    source_image = os.path.join(setting['dirs']['kvm-a'], NAME + '.qcow2')
    target_image = os.path.join(setting['dirs']['kvm-b'], NAME + '.qcow2')
    make_image(source_image, 'qcow2', 64)
    console = start_guest(lab, setting, source_image, 'qcow2')
    target_console = SerialRecorder(os.path.join(host_b.run_dir, 'ctrl', NAME + '.serial'), appear_within=120)

    def module(host, args):
        done = run_adhoc(setting['inventory'], 'hvops.kvm.kvm_migrate',
                         dict(args, name=NAME, run_dir=host.run_dir, state_dir=host.state_dir, storage='copy'),
                         host=host.name)
        assert done.rc == 0, done.result(host=host.name)
        return done.result(host=host.name)
    try:
        prepared = module(host_a, {'phase': 'prepare'})
        assert prepared['disks'] == [{'index': 0, 'path': source_image, 'format': 'qcow2',
                                      'virtual_size': 64 * MIB, 'readonly': False}]
        accepted = module(host_b, {
            'phase': 'accept', 'runtime': prepared['runtime'], 'definition': prepared['definition'],
            'disks': prepared['disks'], 'storage_map': {setting['dirs']['kvm-a']: setting['dirs']['kvm-b']},
            'migration_address': host_b.address, 'tls': True, 'tls_dir': setting['tls_dirs']['kvm-b'],
            'tls_peer': 'CN=kvm-a'})
        assert accepted['disks'][0]['path'] == target_image and os.path.isfile(target_image)
        assert accepted['nbd']['exports'] == [{'index': 0, 'name': 'disk0'}]
        assert 'export_disks' in accepted['actions']
        rogue_nbd_clients_are_refused(lab, setting, host_b.address, accepted['nbd'])
        before = last_write(console)
        migrated = module(host_a, {'phase': 'migrate', 'uri': accepted['uri'], 'nbd': accepted['nbd'],
                                   'tls': True, 'tls_dir': setting['tls_dirs']['kvm-a']})
        assert migrated['status'] == 'completed' and migrated['tls'] is True, migrated
        assert migrated['storage']['mode'] == 'copy' and migrated['storage']['disks'] == 1
        assert migrated['capabilities']['pause-before-switchover'] is True
        # The source is stopped for good and the target not resumed: both images as at the switch-over.
        compare = subprocess.run(['qemu-img', 'compare', '-U', source_image, target_image],
                                 capture_output=True, text=True, check=False)
        assert compare.returncode == 0, compare.stdout + compare.stderr
        assert 'Images are identical' in compare.stdout
        switched_at = last_write(console)
        assert switched_at >= before
        finalized = module(host_b, {'phase': 'finalize', 'success': True})
        assert 'stop_nbd_server' in finalized['actions']
        confirmed = module(host_a, {'phase': 'confirm', 'success': True})
        assert confirmed['removed_disks'] == []
        # The guest goes on on kvm-b from where it was, writing the target's image.
        wait_write_after(target_console, switched_at)
        first = [int(line.split()[2]) for line in target_console.lines() if line.startswith('disk: wrote ')][0]
        assert first == switched_at + 1, (switched_at, target_console.lines()[-10:])
        assert 'hvops-linux-guest ready' not in ''.join(target_console.lines())
        with qmp_of(host_b) as qmp:
            assert qmp.execute('query-block-exports') == []
            files = [entry['inserted']['file'] for entry in qmp.execute('query-block') if entry.get('inserted')]
            assert files == [target_image], files
        with open(os.path.join(host_b.state_dir, 'guests', NAME + '.json')) as handle:
            assert json.load(handle)['disks'][0]['path'] == target_image
        assert os.path.isfile(source_image)
        assert qemu_processes_under(host_a.run_dir) == []
    finally:
        target_console.stop()
        console.stop()
        clear_guests(lab, [NAME])


def rogue_nbd_clients_are_refused(lab, setting, address, nbd):
    """A write into the target's export from kvm-a's namespace, without TLS
    and with a third node's valid certificate: both refused, each in QEMU's
    own words (the client's for the first, the target's log for the second)."""
    pki = setting['pki']
    ca = os.path.join(pki.base, 'ca-hvops-lab-ca')
    third = pki.node((os.path.join(ca, 'ca.pem'), os.path.join(ca, 'ca.key')), 'kvm-c',
                     address=lab.host('kvm-a').address)
    export = nbd['exports'][0]['name']
    write = ['-c', 'write -P 0xaa 0 4k']
    plain = lab.run('kvm-a', ['qemu-io', '-f', 'raw', 'nbd://%s:%d/%s' % (address, nbd['port'], export)] + write)
    assert plain.returncode != 0 and 'not permitted before TLS' in plain.stderr, plain.stdout + plain.stderr
    third_node = lab.run('kvm-a', [
        'qemu-io', '--object', 'tls-creds-x509,id=rogue,dir=%s,endpoint=client' % third, '--image-opts',
        'driver=nbd,server.type=inet,server.host=%s,server.port=%d,export=%s,tls-creds=rogue,tls-hostname=%s'
        % (address, nbd['port'], export, address)] + write)
    assert third_node.returncode != 0 and 'wrote' not in third_node.stdout, third_node.stdout + third_node.stderr
    with open(os.path.join(lab.host('kvm-b').run_dir, 'conf', NAME + '.log')) as handle:
        log = handle.read()
    assert 'authz check for CN=kvm-c is denied' in log, log


# -- faults during the copy, through playbooks/migrate.yml ----------------------------
FAULT_NAME = 'copy2'
RANDOM_MIB = 24


@pytest.fixture(scope='module')
def copying(lab, setting):
    """copy2 on kvm-a, for the whole group of fault tests (each leaves it
    running there): a raw disk whose first 24 MiB are random, copied at
    4 MiB/s, so that a fault comes mid-copy."""
    image = os.path.join(setting['dirs']['kvm-a'], FAULT_NAME + '.raw')
    make_image(image, 'raw', 48, random_mib=RANDOM_MIB)
    host = lab.host('kvm-a')
    console = SerialRecorder(os.path.join(host.run_dir, 'ctrl', FAULT_NAME + '.serial'))
    started = run_adhoc(setting['inventory'], 'hvops.kvm.kvm_instance', {
        'name': FAULT_NAME, 'run_dir': host.run_dir, 'state_dir': host.state_dir, 'memory': 128,
        'accel': 'tcg', 'machine': 'pc', 'state': 'started', 'kernel': setting['kernel'],
        'initrd': setting['initrd'], 'root': '/dev/ram0', 'disks': [{'path': image, 'format': 'raw'}]},
        host='kvm-a')
    assert started.rc == 0, started.result(host='kvm-a')
    console.wait_for('disk: wrote 2', 60)
    try:
        yield {'image': image, 'console': console,
               'target_image': os.path.join(setting['dirs']['kvm-b'], FAULT_NAME + '.raw')}
    finally:
        console.stop()
        clear_guests(lab, [FAULT_NAME])


def migrate_with_a_fault(lab, setting, copying, fault):
    """playbooks/migrate.yml with storage: copy, and fault(target pid) once the
    target's image holds a few MiB of the copy; the play's result."""
    box = {}
    extra = {'instance': FAULT_NAME, 'source': 'kvm-a', 'target': 'kvm-b', 'migrate_storage': 'copy',
             'migrate_storage_map': {setting['dirs']['kvm-a']: setting['dirs']['kvm-b']},
             'migrate_storage_bandwidth_mib': 4, 'migrate_stall_timeout': 3}
    thread = threading.Thread(target=lambda: box.update(
        play=run_playbook(setting['inventory'], MIGRATE_BOOK, extra_vars=extra, timeout=300)))
    thread.start()
    host_b = lab.host('kvm-b')
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and thread.is_alive(), box
        procs = qemu_processes_under(host_b.run_dir)
        try:
            copied = os.stat(copying['target_image']).st_blocks * 512
        except FileNotFoundError:
            copied = 0
        if procs and copied >= 4 * MIB:
            break
        time.sleep(0.05)
    assert copied < RANDOM_MIB * MIB, 'the copy was over before the fault'
    fault(procs[0][0])
    thread.join(300)
    assert not thread.is_alive()
    return box['play']


def assert_guest_kept_on_the_source(lab, copying):
    """The guest runs on kvm-a, from its own disk, writing on; nothing of it on kvm-b."""
    host_a, host_b = lab.host('kvm-a'), lab.host('kvm-b')
    console = copying['console']
    wait_write_after(console, last_write(console))
    with QmpClient(os.path.join(host_a.run_dir, 'ctrl', FAULT_NAME + '.qmp')) as qmp:
        assert qmp.execute('query-status')['status'] == 'running'
        files = [entry['inserted']['file'] for entry in qmp.execute('query-block') if entry.get('inserted')]
        assert files == [copying['image']]
    assert len(qemu_processes_under(host_a.run_dir)) == 1
    nothing_on(host_b, copying['target_image'])


def test_the_target_killed_mid_copy_leaves_the_guest_on_the_source(lab, setting, copying):
    play = migrate_with_a_fault(lab, setting, copying, lambda pid: os.kill(pid, signal.SIGKILL))
    assert play.rc != 0
    assert 'copying the disks' in play.stdout and 'Rolled back' in play.stdout, play.stdout[-3000:]
    assert_guest_kept_on_the_source(lab, copying)


def test_the_target_stopped_mid_copy_stalls_the_mirror_and_is_rolled_back(lab, setting, copying):
    """SIGSTOP: the target's NBD server stops reading, the mirror makes no
    progress, the copy is cancelled after the stall timeout, and the
    rollback kills the silent target on the source's evidence."""
    play = migrate_with_a_fault(lab, setting, copying, lambda pid: os.kill(pid, signal.SIGSTOP))
    assert play.rc != 0
    assert 'copying the disks made no progress' in play.stdout, play.stdout[-3000:]
    assert_guest_kept_on_the_source(lab, copying)
    with QmpClient(os.path.join(lab.host('kvm-a').run_dir, 'ctrl', FAULT_NAME + '.qmp')) as qmp:
        assert [job for job in qmp.execute('query-jobs') if job['id'].startswith('hvops-')] == []


def test_the_link_cut_mid_copy_leaves_the_guest_on_the_source(lab, setting, copying):
    """Last: the cut link leaves the source's mirror job waiting on its NBD
    connection until the link is back; the guest runs on meanwhile."""
    try:
        play = migrate_with_a_fault(lab, setting, copying, lambda pid: lab.cut_link())
        assert play.rc != 0
        assert 'copying the disks made no progress' in play.stdout, play.stdout[-3000:]
        assert_guest_kept_on_the_source(lab, copying)
    finally:
        lab.restore_link()
