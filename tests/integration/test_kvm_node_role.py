"""The hvops.kvm.kvm_node role through real ansible-playbook runs on localhost.

The packages are installed on the test machine already (tools/setup.sh), so apt
reports ok; the state directory, the TLS directory and the controller's CA go
to temporary directories. The apt cache is not refreshed, so the tests need no
network.
"""
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.harness import REPO
from tests.harness.ansible_run import run_playbook, write_local_inventory

# The hvops-kvm-guests unit is installed where a test asks for it (the first
# one and test_guests_unit.py), and the TLS credentials where a test is about
# them (they are a third of a run's tasks).
HOST_VARS = {'kvm_node_apt_update_cache': False, 'kvm_node_guests_service': False, 'kvm_node_tls': False}


@pytest.fixture(scope='module', autouse=True)
def debian_with_packages():
    if not os.path.exists('/etc/debian_version') or shutil.which('apt-get') is None:
        pytest.skip('the kvm_node role is for Debian and Ubuntu')
    missing = [tool for tool in ('qemu-system-x86_64', 'qemu-img', 'socat', 'ip') if shutil.which(tool) is None]
    if missing:
        message = '%s not installed (make setup installs them)' % ', '.join(missing)
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def play(tmp_path):
    """play(**role_vars) -> path of a playbook applying the role to localhost."""
    inventory = write_local_inventory(str(tmp_path / 'inventory.ini'))

    def write(**role_vars):
        role_vars = dict(HOST_VARS, **dict({'kvm_node_run_dir': str(tmp_path / 'run'),
                                            'kvm_node_state_dir': str(tmp_path / 'state'),
                                            'kvm_node_guests_lib_dir': str(tmp_path / 'lib'),
                                            'kvm_node_systemd_dir': str(tmp_path / 'systemd'),
                                            'kvm_node_tls_dir': str(tmp_path / 'etc' / 'tls'),
                                            'kvm_node_tls_ca_dir': str(tmp_path / 'ca')}, **role_vars))
        path = str(tmp_path / 'site.yml')
        with open(path, 'w') as handle:
            json.dump([{'name': 'Prepare the node', 'hosts': 'localhost', 'gather_facts': False,
                        'roles': [{'role': 'hvops.kvm.kvm_node', 'vars': role_vars}]}], handle, indent=1)
        return inventory, path
    return write


def stats(result):
    return result.data['stats']['localhost']


def task(result, suffix):
    """The result of the task whose name ends with suffix (role tasks are prefixed)."""
    found = [res for name, res in result.tasks() if name.endswith(suffix)]
    assert found, [name for name, _res in result.tasks()]
    return found[-1]


def changed_tasks(result):
    """Names of the tasks that changed something, in order, each once."""
    names = []
    for name, res in result.tasks():
        short = name.split(' : ', 1)[-1]
        if res.get('changed') and short not in names:
            names.append(short)
    return names


def test_second_run_changes_nothing_and_check_mode_touches_nothing(play, tmp_path):
    # Without TLS, which has its own tests below, the directories and the unit are all that changes.
    inventory, book = play(kvm_node_guests_service=True)
    run_dir = str(tmp_path / 'run')
    changes = ['Create the runtime directory', 'Create the persistent state directory (definitions, policies, reports)',
               'Create the directories of the node library and of the unit', 'Install the node library on the node',
               'Stamp the digest of the node library', 'Install the hvops-kvm-guests unit',
               'Create the wants directory of multi-user.target where systemd does not run',
               'Enable the unit where systemd does not run']

    predicted = run_playbook(inventory, book, check=True)
    assert predicted.rc == 0, predicted
    assert changed_tasks(predicted) == changes, 'only the directories and the unit are missing'
    assert not os.path.exists(run_dir), 'check mode created the state directory'
    assert not any(os.path.exists(str(tmp_path / name)) for name in ('state', 'lib', 'systemd')), \
        'check mode wrote something'

    first = run_playbook(inventory, book)
    assert first.rc == 0, first
    assert changed_tasks(first) == changes and stats(first)['failures'] == 0
    assert task(first, 'Install QEMU, qemu-utils, socat and xorriso')['changed'] is False
    assert os.stat(run_dir).st_mode & 0o777 == 0o711
    assert os.stat(str(tmp_path / 'state')).st_mode & 0o777 == 0o700
    unit = str(tmp_path / 'systemd' / 'hvops-kvm-guests.service')
    with open(unit) as handle:
        text = handle.read()
    assert 'ExecStart=/usr/bin/python3 -m ansible_collections.hvops.kvm.plugins.module_utils._node_service boot' in text
    assert '--state-dir %s' % (tmp_path / 'state') in text and 'WantedBy=multi-user.target' in text
    assert os.readlink(str(tmp_path / 'systemd' / 'multi-user.target.wants' / 'hvops-kvm-guests.service')) == unit
    library = str(tmp_path / 'lib' / 'hvops-kvm-node-library.zip')
    assert 'Environment=PYTHONPATH=%s\n' % library in text
    with zipfile.ZipFile(library) as packed:
        assert [name for name in packed.namelist() if name.endswith('.py')] == sorted(
            'ansible_collections/hvops/kvm/plugins/module_utils/' + name
            for name in os.listdir(os.path.join(REPO, 'plugins', 'module_utils')) if name.endswith('.py'))
    assert os.stat(library).st_mode & 0o777 == 0o644
    # The unit's command runs from the zip alone, with no collection on the path.
    ran = subprocess.run([sys.executable, '-m', 'ansible_collections.hvops.kvm.plugins.module_utils._node_service',
                          '--help'], env={'PYTHONPATH': library, 'PATH': os.environ['PATH']}, cwd=str(tmp_path),
                         capture_output=True, text=True, check=False)
    assert ran.returncode == 0 and 'usage: hvops-kvm-guests' in ran.stdout, ran.stdout + ran.stderr
    assert task(first, "Create the user guests' QEMU runs as")['changed'] is False, 'make setup made it'
    facts = task(first, "Gather the node's KVM facts")['ansible_facts']['kvm_node']
    assert facts['run_dir'] == run_dir and facts['instances'] == {}
    assert facts['hypervisor']['qemu']['path'] == shutil.which('qemu-system-x86_64')

    second = run_playbook(inventory, book)
    assert second.rc == 0, second
    assert stats(second)['changed'] == 0 and stats(second)['ok'] > 0

    checked = run_playbook(inventory, book, check=True)
    assert checked.rc == 0, checked
    assert stats(checked)['changed'] == 0


def test_a_loose_runtime_directory_is_tightened(play, tmp_path):
    inventory, book = play()
    run_dir = tmp_path / 'run'
    run_dir.mkdir(mode=0o755)
    os.chmod(str(run_dir), 0o755)
    result = run_playbook(inventory, book)
    assert result.rc == 0, result
    assert task(result, 'Create the runtime directory')['changed'] is True
    assert os.stat(str(run_dir)).st_mode & 0o777 == 0o711


def test_a_missing_bridge_fails_clearly(play, tmp_path):
    inventory, book = play(kvm_node_bridges=['hvk-nobr0', 'hvk-nobr1'])
    result = run_playbook(inventory, book)
    assert result.rc != 0
    failed = task(result, 'Check that the bridges for guests exist')
    assert failed.get('failed') is True
    message = failed['msg']
    assert 'Bridges hvk-nobr0, hvk-nobr1 missing on localhost' in message
    assert 'does not create them' in message
    names = [name for name, _res in result.tasks()]
    assert not any(name.endswith("Gather the node's KVM facts") for name in names), 'went on after the failure'
    assert stats(result)['changed'] == 2, 'only the runtime and state directories were made'


def test_an_existing_bridge_passes(play):
    bridge = 'hvk-br%d' % (os.getpid() % 10000)
    made = subprocess.run(['ip', 'link', 'add', 'name', bridge, 'type', 'bridge'],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip('cannot create a test bridge here: %s' % made.stderr.strip())
    try:
        inventory, book = play(kvm_node_bridges=[bridge])
        result = run_playbook(inventory, book)
        assert result.rc == 0, result
        assert task(result, 'List the bridges of the node')['changed'] is False
        checked = run_playbook(inventory, book, check=True)
        assert checked.rc == 0 and stats(checked)['changed'] == 0, checked
    finally:
        subprocess.run(['ip', 'link', 'delete', bridge], check=False)


def test_problems_are_shown_and_fail_the_play_only_when_asked(play, tmp_path):
    # A pidfile nobody holds: an instance whose QEMU died and left files behind.
    pid_dir = tmp_path / 'run' / 'pid'
    pid_dir.mkdir(parents=True)
    os.chmod(str(tmp_path / 'run'), 0o700)
    (pid_dir / 'ghost.pid').write_text('999999\n')

    inventory, book = play(kvm_node_facts_subset=['instances'])
    shown = run_playbook(inventory, book)
    assert shown.rc == 0, shown
    assert any('instance ghost crashed' in p for p in task(shown, "Show the node's problems")['msg'])

    inventory, book = play(kvm_node_facts_subset=['instances'], kvm_node_fail_on_problems=True)
    failed = run_playbook(inventory, book)
    assert failed.rc != 0
    message = task(failed, "Fail on the node's problems")['msg']
    assert message.startswith('localhost is not ready for guests: instance ghost crashed'), message


@pytest.fixture
def throwaway_user():
    """A user name the machine does not have; removed again afterwards."""
    name = 'hvkt-qemu%d' % (os.getpid() % 1000)
    yield name
    subprocess.run(['userdel', name], capture_output=True, check=False)
    subprocess.run(['groupdel', name], capture_output=True, check=False)


def test_the_qemu_user_is_created_as_a_system_user_without_a_login(play, throwaway_user, tmp_path):
    inventory, book = play(kvm_node_qemu_user=throwaway_user, kvm_node_tls=True)
    predicted = run_playbook(inventory, book, check=True)
    assert predicted.rc == 0, predicted
    assert task(predicted, "Create the user guests' QEMU runs as")['changed'] is True
    with pytest.raises(KeyError):
        pwd.getpwnam(throwaway_user)
    first = run_playbook(inventory, book)
    assert first.rc == 0, first
    entry = pwd.getpwnam(throwaway_user)
    assert entry.pw_shell == '/usr/sbin/nologin' and entry.pw_dir == '/nonexistent'
    assert entry.pw_uid < 1000, 'a system user'
    assert not os.path.exists('/nonexistent')
    second = run_playbook(inventory, book)
    assert second.rc == 0 and stats(second)['changed'] == 0, second
    keys = [tmp_path / 'etc' / 'tls' / name for name in ('server-key.pem', 'client-key.pem')]
    assert [os.stat(str(key)).st_uid for key in keys] == [entry.pw_uid] * 2, 'the new user reads the TLS key'


# TLS credentials for live migration (tasks/tls.yml).

TLS_FILES = ('ca-cert.pem', 'server-cert.pem', 'client-cert.pem', 'server-key.pem', 'client-key.pem')
TLS_VARS = {'kvm_node_tls': True, 'kvm_migration_address': '127.0.0.1'}


def openssl(*args):
    return subprocess.run(['openssl'] + list(args), capture_output=True, text=True, check=True).stdout


def secret_of(path):
    """(base64 lines, private number in hex) of a PEM private key: none may show
    in ansible's output. Lines that are also in the public key are left out (the
    last line of an EC key holds its public key, which is in the certificate)."""
    public = openssl('pkey', '-in', str(path), '-pubout')
    with open(str(path)) as handle:
        lines = [line.strip() for line in handle
                 if line.strip() and not line.startswith('-----') and line.strip() not in public]
    text = openssl('pkey', '-in', str(path), '-noout', '-text')
    label = 'priv:' if 'priv:' in text else 'privateExponent:'
    block = text.split(label, 1)[1].splitlines()[1:]
    number = ''.join(line.strip() for line in block[:next(i for i, line in enumerate(block)
                                                          if not line.startswith(' '))])
    number = number.replace(':', '').lower().lstrip('0')
    assert lines and len(number) >= 60, (path, lines, number)
    return lines, number


def assert_key_not_shown(result, *keys):
    shown = result.stdout + result.stderr
    assert 'PRIVATE KEY' not in shown
    flat = shown.replace(':', '').replace(' ', '').replace('\\n', '').replace('\n', '').lower()
    for key in keys:
        lines, number = secret_of(key)
        for line in lines:
            assert line not in shown, 'a line of %s is in the output' % key
        assert number not in flat, 'the private number of %s is in the output' % key
        assert str(int(number, 16)) not in shown, 'the private number of %s is in the output' % key


def tls_contents(directory):
    return dict((name, (directory / name).read_bytes()) for name in TLS_FILES)


def certificate_text(path):
    return openssl('x509', '-in', str(path), '-noout', '-text')


def extension(text, name):
    """The value line of the X509v3 extension called name in `openssl x509 -text`."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith('X509v3 %s:' % name):
            return lines[index + 1].strip()
    raise AssertionError('no %s extension in\n%s' % (name, text))


@pytest.fixture
def tls(tmp_path):
    """(tls_dir, ca_dir) of the play fixture's default role variables; the
    tests look at the files with the openssl command."""
    if shutil.which('openssl') is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('openssl not installed')
        pytest.skip('openssl not installed')
    return tmp_path / 'etc' / 'tls', tmp_path / 'ca'


def test_tls_credentials_are_made_checked_and_kept(play, tls):
    tls_dir, ca_dir = tls
    inventory, book = play(**TLS_VARS)

    predicted = run_playbook(inventory, book, check=True)
    assert predicted.rc == 0, predicted
    assert task(predicted, 'Create the TLS directory')['changed'] is True
    assert task(predicted, "Install the node's key for both endpoints")['changed'] is True
    assert task(predicted, "Install the node's certificate for both endpoints")['changed'] is True
    assert task(predicted, 'Store the CA key on the controller')['changed'] is True
    assert not os.path.exists(str(tls_dir.parent)), 'check mode created the TLS directory'
    assert not os.path.exists(str(ca_dir)), 'check mode created the CA'

    first = run_playbook(inventory, book, diff=True)
    assert first.rc == 0, first
    assert task(first, "Install the node's key for both endpoints")['changed'] is True
    qemu = pwd.getpwnam('hvops-qemu')
    status = os.stat(str(tls_dir))
    assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (0, grp.getgrnam('hvops-qemu').gr_gid, 0o750)
    assert os.stat(str(tls_dir.parent)).st_mode & 0o7777 == 0o755, 'the parent made apart, not with 0750'
    for name in ('ca-cert.pem', 'server-cert.pem', 'client-cert.pem'):
        status = os.stat(str(tls_dir / name))
        assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (0, 0, 0o644), name
    for name in ('server-key.pem', 'client-key.pem'):
        status = os.stat(str(tls_dir / name))
        assert (status.st_uid, status.st_mode & 0o7777) == (qemu.pw_uid, 0o600), name
    assert sorted(os.listdir(str(tls_dir))) == sorted(TLS_FILES)
    contents = tls_contents(tls_dir)
    assert contents['server-cert.pem'] == contents['client-cert.pem']
    assert contents['server-key.pem'] == contents['client-key.pem']

    # The role's CA, on the controller.
    assert os.stat(str(ca_dir)).st_mode & 0o7777 == 0o700
    assert os.stat(str(ca_dir / 'ca-key.pem')).st_mode & 0o7777 == 0o600
    assert (ca_dir / 'ca-cert.pem').read_bytes() == contents['ca-cert.pem']
    assert_key_not_shown(first, tls_dir / 'server-key.pem', ca_dir / 'ca-key.pem')

    # The certificate: CN=localhost only, for both ends, by the CA.
    for name in ('server-cert.pem', 'client-cert.pem'):
        assert openssl('verify', '-CAfile', str(tls_dir / 'ca-cert.pem'), str(tls_dir / name)).strip() \
            == '%s: OK' % (tls_dir / name)
    subject = openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-subject', '-nameopt', 'RFC2253')
    assert subject.strip() == 'subject=CN=localhost'
    text = certificate_text(tls_dir / 'server-cert.pem')
    assert extension(text, 'Subject Alternative Name').split(', ') == ['DNS:localhost', 'IP Address:127.0.0.1']
    assert extension(text, 'Extended Key Usage').split(', ') == \
        ['TLS Web Server Authentication', 'TLS Web Client Authentication']
    assert extension(text, 'Key Usage').split(', ') == ['Digital Signature', 'Key Encipherment']
    assert extension(text, 'Basic Constraints') == 'CA:FALSE'
    assert 'ASN1 OID: prime256v1' in openssl('pkey', '-in', str(tls_dir / 'server-key.pem'), '-noout', '-text')
    # The node's key belongs to the certificate.
    assert openssl('pkey', '-in', str(tls_dir / 'server-key.pem'), '-pubout') == \
        openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-pubkey')
    # Valid kvm_node_tls_days (825) days.
    assert openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-checkend', str(824 * 86400))
    with pytest.raises(subprocess.CalledProcessError):
        openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-checkend', str(826 * 86400))

    second = run_playbook(inventory, book)
    assert second.rc == 0, second
    assert stats(second)['changed'] == 0, second
    assert tls_contents(tls_dir) == contents, 'a second run replaced a file'

    checked = run_playbook(inventory, book, check=True)
    assert checked.rc == 0 and stats(checked)['changed'] == 0, checked
    assert_key_not_shown(checked, tls_dir / 'server-key.pem', ca_dir / 'ca-key.pem')


def test_a_certificate_that_expires_soon_is_replaced_and_the_key_kept(play, tls, tmp_path):
    tls_dir, ca_dir = tls
    inventory, book = play(**TLS_VARS)
    first = run_playbook(inventory, book)
    assert first.rc == 0, first
    before = tls_contents(tls_dir)

    def sign_again(days):
        """The node certificate signed again by the CA: the same key and names, valid days days."""
        csr, short = str(tmp_path / 'node.csr'), str(tmp_path / 'short.pem')
        openssl('x509', '-x509toreq', '-in', str(tls_dir / 'server-cert.pem'),
                '-key', str(tls_dir / 'server-key.pem'), '-copy_extensions', 'copyall', '-out', csr)
        openssl('x509', '-req', '-in', csr, '-CA', str(ca_dir / 'ca-cert.pem'), '-CAkey', str(ca_dir / 'ca-key.pem'),
                '-copy_extensions', 'copyall', '-days', str(days), '-set_serial', str(days), '-out', short)
        for name in ('server-cert.pem', 'client-cert.pem'):
            shutil.copyfile(short, str(tls_dir / name))
        return tls_contents(tls_dir)

    # 40 days left: kept as it is.
    later = sign_again(40)
    kept = run_playbook(inventory, book)
    assert kept.rc == 0 and stats(kept)['changed'] == 0, kept
    assert tls_contents(tls_dir) == later

    # 10 days left: replaced.
    soon = sign_again(10)

    predicted = run_playbook(inventory, book, check=True)
    assert predicted.rc == 0, predicted
    assert stats(predicted)['changed'] == 1, 'only the certificate is to be replaced'
    assert task(predicted, "Install the node's certificate for both endpoints")['changed'] is True
    assert tls_contents(tls_dir) == soon, 'check mode changed a file'

    renewed = run_playbook(inventory, book)
    assert renewed.rc == 0, renewed
    assert stats(renewed)['changed'] == 1, renewed
    after = tls_contents(tls_dir)
    assert after['server-cert.pem'] not in (soon['server-cert.pem'], later['server-cert.pem'],
                                            before['server-cert.pem'])
    assert after['server-cert.pem'] == after['client-cert.pem']
    assert after['server-key.pem'] == before['server-key.pem'], 'the key was kept'
    assert openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-checkend', str(824 * 86400))
    openssl('verify', '-CAfile', str(tls_dir / 'ca-cert.pem'), str(tls_dir / 'server-cert.pem'))


def make_operator_ca(directory):
    directory.mkdir()
    cert, key = directory / 'operator-ca.pem', directory / 'operator-ca.key'
    openssl('req', '-x509', '-newkey', 'rsa:3072', '-nodes', '-keyout', str(key), '-out', str(cert),
            '-days', '60', '-subj', '/CN=operator CA',
            '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    return cert, key


def test_an_operator_ca_is_used_and_a_change_of_ca_signs_again(play, tls, tmp_path):
    tls_dir, ca_dir = tls
    cert, key = make_operator_ca(tmp_path / 'operator')
    inventory, book = play(kvm_node_tls_ca_cert=str(cert), kvm_node_tls_ca_key=str(key), **TLS_VARS)
    given = run_playbook(inventory, book)
    assert given.rc == 0, given
    assert not os.path.exists(str(ca_dir)), 'the role made a CA of its own'
    assert (tls_dir / 'ca-cert.pem').read_bytes() == cert.read_bytes()
    openssl('verify', '-CAfile', str(cert), str(tls_dir / 'server-cert.pem'))
    issuer = openssl('x509', '-in', str(tls_dir / 'server-cert.pem'), '-noout', '-issuer', '-nameopt', 'RFC2253')
    assert issuer.strip() == 'issuer=CN=operator CA'
    assert_key_not_shown(given, key, tls_dir / 'server-key.pem')
    again = run_playbook(inventory, book)
    assert again.rc == 0 and stats(again)['changed'] == 0, again
    assert not os.path.exists(str(ca_dir))
    before = tls_contents(tls_dir)

    # Back to the role's own CA: the node certificate no longer matches and is signed again.
    inventory, book = play(**TLS_VARS)
    own = run_playbook(inventory, book)
    assert own.rc == 0, own
    after = tls_contents(tls_dir)
    assert after['ca-cert.pem'] == (ca_dir / 'ca-cert.pem').read_bytes() != before['ca-cert.pem']
    assert after['server-cert.pem'] != before['server-cert.pem']
    assert after['server-key.pem'] == before['server-key.pem']
    openssl('verify', '-CAfile', str(ca_dir / 'ca-cert.pem'), str(tls_dir / 'server-cert.pem'))
    with pytest.raises(subprocess.CalledProcessError):
        openssl('verify', '-CAfile', str(cert), str(tls_dir / 'server-cert.pem'))


def test_half_an_operator_ca_is_refused(play, tls, tmp_path):
    tls_dir, _ca_dir = tls
    cert, _key = make_operator_ca(tmp_path / 'operator')
    inventory, book = play(kvm_node_tls_ca_cert=str(cert), kvm_node_tls=True)
    refused = run_playbook(inventory, book)
    assert refused.rc != 0
    assert 'Give both kvm_node_tls_ca_cert and kvm_node_tls_ca_key' in task(refused, 'Check the TLS CA variables')['msg']
    assert not os.path.exists(str(tls_dir))


def test_tls_false_makes_no_tls_directory(play, tls):
    tls_dir, ca_dir = tls
    inventory, book = play(kvm_node_tls=False)
    result = run_playbook(inventory, book)
    assert result.rc == 0, result
    assert stats(result)['changed'] == 2, 'only the runtime and state directories'
    assert not os.path.exists(str(tls_dir.parent)) and not os.path.exists(str(ca_dir))
    assert task(result, 'Set up the TLS credentials for live migration').get('skipped') is True
    names = [name for name, _res in result.tasks()]
    assert not any(name.endswith('Create the TLS directory') for name in names), names
