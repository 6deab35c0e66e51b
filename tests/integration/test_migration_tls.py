"""TLS migration with mutual certificates (issue 10): kvm_migrate's phases
through real ansible runs between two simulated nodes (src, dst) on this
machine, real QEMU running as the QEMU user, over loopback. A rogue client
gets onto the target's port before the source, and is refused: plain TCP, TLS
with a certificate of another CA, and a valid certificate of a third node the
target was not told to let in. Each time the real migration then completes and
the guest's tick counter goes on."""
import os
import socket
import ssl
import sys
import time

import pytest

from tests.harness.ansible_run import run_adhoc
from tests.harness.lab import inventory_with_tls
from tests.harness.nodes import Pair
from tests.harness.qemu_procs import assert_ticks_continue, ticks
from tests.harness.system import QEMU_USER, require_binary
from tests.harness.tls_pki import Pki

from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession

ROGUE_WAIT = 5.0


@pytest.fixture(scope='module')
def pki():
    require_binary('openssl')
    made = Pki()
    ca = made.authority('hvops-test-ca')
    made.dirs = {'src': made.node(ca, 'src'), 'dst': made.node(ca, 'dst'), 'kvm3': made.node(ca, 'kvm3'),
                 'impostor': made.node(made.authority('other-ca'), 'src')}
    yield made
    made.destroy()


@pytest.fixture
def pair():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)
    made = Pair()
    yield made
    made.destroy()


def uid_and_seccomp(pid):
    with open('/proc/%d/status' % pid) as handle:
        fields = dict(line.split(':', 1) for line in handle.read().splitlines() if ':' in line)
    return int(fields['Uid'].split()[1]), fields['Seccomp'].strip()


def tls_migrate(pair, pki, source, target, rogue=None):
    """The five phases from source to target with TLS on; rogue(port) runs
    after accept and before migrate. Returns the phases' results."""
    prepared = pair.ok(source, {'phase': 'prepare'})
    accepted = pair.ok(target, {'phase': 'accept', 'runtime': prepared['runtime'],
                                'definition': prepared['definition'], 'tls': True,
                                'tls_dir': pki.dirs[target], 'tls_peer': 'CN=%s' % source})
    assert accepted['tls'] is True and accepted['tls_peer'] == 'CN=%s' % source
    assert accepted['actions'] == ['start_incoming', 'load_tls_credentials', 'listen']
    if rogue is not None:
        rogue(accepted['port'])
        with QmpSession(os.path.join(pair.run_dir(target), 'ctrl', 'vm1.qmp')) as qmp:
            assert qmp.execute('query-status')['status'] == 'inmigrate', 'the rogue got in'
    migrated = pair.ok(source, {'phase': 'migrate', 'uri': accepted['uri'], 'tls': True,
                                'tls_dir': pki.dirs[source]})
    assert migrated['status'] == 'completed' and migrated['tls'] is True, migrated
    assert migrated['parameters']['tls-creds'] == 'hvops-tls-out'
    assert migrated['parameters']['tls-hostname'] == '127.0.0.1'
    finalized = pair.ok(target, {'phase': 'finalize', 'success': True})
    confirmed = pair.ok(source, {'phase': 'confirm', 'success': True})
    return accepted, migrated, finalized, confirmed


def test_a_tls_migration_there_and_back_as_the_qemu_user(pair, pki, guest_image):
    import pwd  # pylint: disable=import-outside-toplevel
    pair.start_guest(guest_image('normal'))
    before = ticks(pair.serial('src'))
    accepted, _migrated, _finalized, _confirmed = tls_migrate(pair, pki, 'src', 'dst')
    assert pair.pids('src') == [] and pair.pids('dst') == [accepted['pid']]
    assert uid_and_seccomp(accepted['pid']) == (pwd.getpwnam(QEMU_USER).pw_uid, '2')
    middle = assert_ticks_continue(before, pair.serial('dst'), within_s=60)
    back, _migrated, _finalized, _confirmed = tls_migrate(pair, pki, 'dst', 'src')
    assert pair.pids('dst') == [] and pair.pids('src') == [back['pid']]
    assert_ticks_continue(middle, pair.serial('src'), within_s=60)


def plain_garbage(port):
    with socket.create_connection(('127.0.0.1', port), timeout=ROGUE_WAIT) as sock:
        sock.sendall(b'QEVM' + os.urandom(4096))
        sock.settimeout(ROGUE_WAIT)
        try:
            sock.recv(65536)    # QEMU answers a TLS alert, or closes
        except OSError:
            pass


def tls_client(credentials):
    def rogue(port):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(os.path.join(credentials, 'client-cert.pem'),
                                os.path.join(credentials, 'client-key.pem'))
        with socket.create_connection(('127.0.0.1', port), timeout=ROGUE_WAIT) as raw:
            try:
                with context.wrap_socket(raw) as sock:
                    # A migration stream's header, then garbage: what a hostile
                    # source would feed QEMU's state loader.
                    sock.sendall(b'QEVM\x00\x00\x00\x03' + os.urandom(4096))
                    sock.recv(65536)
            except (ssl.SSLError, OSError):
                pass
        time.sleep(0.2)
    return rogue


@pytest.mark.parametrize('kind', ['plain-tcp', 'other-ca', 'third-node'])
def test_a_rogue_client_first_on_the_port_is_refused_and_the_real_migration_completes(
        pair, pki, guest_image, kind):
    rogue = {'plain-tcp': plain_garbage,
             'other-ca': tls_client(pki.dirs['impostor']),
             'third-node': tls_client(pki.dirs['kvm3'])}[kind]
    pair.start_guest(guest_image('normal'))
    before = ticks(pair.serial('src'))
    accepted, migrated, _finalized, _confirmed = tls_migrate(pair, pki, 'src', 'dst', rogue=rogue)
    assert migrated['stats']['transferred_bytes'] > 0
    assert pair.pids('src') == [] and pair.pids('dst') == [accepted['pid']]
    assert_ticks_continue(before, pair.serial('dst'), within_s=60)
    with open(os.path.join(pair.run_dir('dst'), 'conf', 'vm1.log')) as handle:
        log = handle.read()
    # QEMU's own words for the refusal, in the target's log.
    expected = {'plain-tcp': 'TLS handshake failed', 'other-ca': "certificate hasn't got a known issuer",
                'third-node': 'CN=kvm3 is denied'}[kind]
    assert expected in log, log


def test_without_credentials_nothing_starts(pair, pki, guest_image, tmp_path):
    pair.start_guest(guest_image('normal'))
    prepared = pair.ok('src', {'phase': 'prepare'})
    before = pair.nodes['dst'].snapshot()
    args = {'phase': 'accept', 'runtime': prepared['runtime'], 'tls': True, 'tls_peer': 'CN=src'}
    missing = pair.refused('dst', dict(args, tls_dir=str(tmp_path / 'none')), 'ca-cert.pem is missing')
    assert 'Traceback' not in missing.get('exception', '')
    assert pair.pids('dst') == [] and pair.nodes['dst'].snapshot() == before
    pair.refused('dst', dict(args, tls_dir=pki.dirs['dst'], tls_peer='CN=src\nx'), 'tls_peer')
    pair.refused('dst', dict(args, tls_dir=pki.dirs['dst'], tls_peer=None), 'tls_peer')
    key = os.path.join(pki.dirs['dst'], 'server-key.pem')
    os.chmod(key, 0o644)
    try:
        pair.refused('dst', dict(args, tls_dir=pki.dirs['dst']), 'readable by others')
    finally:
        os.chmod(key, 0o600)
    assert pair.pids('dst') == [] and pair.nodes['dst'].snapshot() == before
    pair.refused('src', {'phase': 'migrate', 'uri': 'tcp:127.0.0.1:49152', 'tls': True,
                         'tls_dir': str(tmp_path / 'none')}, 'client-cert.pem is missing')


# -- over the two-host lab's link ------------------------------------------------------------------
ROGUE_SCRIPT = r'''
import os, socket, ssl, sys
address, port, credentials = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.load_cert_chain(os.path.join(credentials, 'client-cert.pem'), os.path.join(credentials, 'client-key.pem'))
with socket.create_connection((address, port), timeout=5) as raw:
    try:
        with context.wrap_socket(raw) as sock:
            sock.sendall(b'QEVM\x00\x00\x00\x03' + os.urandom(4096))
            print('sent', len(sock.recv(65536)))
    except (ssl.SSLError, OSError) as err:
        print('refused', err)
'''


@pytest.mark.lab
def test_over_the_lab_link_a_third_node_first_on_the_port_is_refused(lab, lab_guest):
    """In the lab, the rogue runs in the source's own namespace with the valid
    certificate of a third node: the target refuses it, and the real source's
    migration over the link then completes."""
    tls = Pki()
    try:
        inventory = inventory_with_tls(lab, tls)
        host_a, host_b = lab.host('kvm-a'), lab.host('kvm-b')
        dirs = dict((host.name, os.path.join(tls.base, 'node-%s-ca-hvops-lab-ca' % host.name))
                    for host in (host_a, host_b))
        # The third node's certificate from the lab's own CA, so only tls_peer keeps it out.
        third = tls.node((os.path.join(tls.base, 'ca-hvops-lab-ca', 'ca.pem'),
                          os.path.join(tls.base, 'ca-hvops-lab-ca', 'ca.key')), 'kvm-c', address=host_a.address)

        def module(host, args):
            done = run_adhoc(inventory, 'hvops.kvm.kvm_migrate', dict(args, name='vm1', run_dir=host.run_dir),
                             host=host.name)
            assert done.rc == 0, done.result(host=host.name)
            return done.result(host=host.name)
        started = run_adhoc(inventory, 'hvops.kvm.kvm_instance', {
            'name': 'vm1', 'run_dir': host_a.run_dir, 'memory': 32, 'accel': 'tcg', 'machine': 'pc',
            'state': 'started', 'disks': [{'path': lab_guest, 'interface': 'ide'}]}, host='kvm-a')
        assert started.rc == 0, started.result(host='kvm-a')
        before = ticks(os.path.join(host_a.run_dir, 'ctrl', 'vm1.serial'))
        prepared = module(host_a, {'phase': 'prepare'})
        accepted = module(host_b, {'phase': 'accept', 'runtime': prepared['runtime'],
                                   'definition': prepared['definition'], 'migration_address': host_b.address,
                                   'tls': True, 'tls_dir': dirs['kvm-b'], 'tls_peer': 'CN=kvm-a'})
        rogue = lab.run('kvm-a', [sys.executable, '-c', ROGUE_SCRIPT, host_b.address, str(accepted['port']),
                                  third])
        assert rogue.returncode == 0, rogue.stderr
        migrated = module(host_a, {'phase': 'migrate', 'uri': accepted['uri'], 'tls': True,
                                   'tls_dir': dirs['kvm-a']})
        assert migrated['status'] == 'completed' and migrated['tls'] is True, migrated
        module(host_b, {'phase': 'finalize', 'success': True})
        module(host_a, {'phase': 'confirm', 'success': True})
        assert_ticks_continue(before, os.path.join(host_b.run_dir, 'ctrl', 'vm1.serial'), within_s=120)
        with open(os.path.join(host_b.run_dir, 'conf', 'vm1.log')) as handle:
            assert 'CN=kvm-c is denied' in handle.read()
    finally:
        tls.destroy()
