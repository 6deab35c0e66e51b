"""The TLS rules of a migration: peers, host names, credential files (issue 10)."""
import os

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _migration_tls as tls
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import DEFAULTS, check_options
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import QemuUser


@pytest.mark.parametrize('peer', ['CN=kvm1', 'O=ops,CN=kvm-1.example.org'])
def test_a_distinguished_name_is_taken_as_the_peer(peer):
    assert tls.check_peer(peer) == peer


@pytest.mark.parametrize('peer', ['', 'kvm1', 'CN=kvm1\n', 'CN=kvm1,', 'CN=a b', 'CN="x"', None, 5, 'CN=a,CN'])
def test_anything_else_is_refused_as_the_peer(peer):
    with pytest.raises(ValidationError, match='tls_peer'):
        tls.check_peer(peer)


@pytest.mark.parametrize('name', ['', 'a b', 'host\n', '-x', 'a/b', None, 'x' * 300])
def test_a_hostname_that_is_not_one_is_refused(name):
    with pytest.raises(ValidationError, match='tls_hostname'):
        tls.check_hostname(name)


@pytest.mark.parametrize('tls_dir', ['relative', '/etc/tls,x', '/etc/t ls', '/etc/tls\n'])
def test_a_tls_dir_with_option_syntax_is_refused(tls_dir):
    with pytest.raises(ValidationError, match='tls_dir'):
        check_options(dict(DEFAULTS, tls=True, tls_dir=tls_dir))


def test_credentials_missing_loose_or_linked_are_problems(tmp_path):
    directory = str(tmp_path)
    assert len(tls.credential_problems(directory, 'server', None)) == 3
    for name in ('ca-cert.pem', 'server-cert.pem', 'server-key.pem'):
        path = os.path.join(directory, name)
        with open(path, 'w') as handle:
            handle.write('x')
        os.chmod(path, 0o600)
    assert tls.credential_problems(directory, 'server', None) == []
    os.chmod(os.path.join(directory, 'server-key.pem'), 0o644)
    assert [p for p in tls.credential_problems(directory, 'server', None) if 'readable by others' in p]
    os.chmod(os.path.join(directory, 'server-key.pem'), 0o600)
    os.unlink(os.path.join(directory, 'ca-cert.pem'))
    os.symlink('/etc/hostname', os.path.join(directory, 'ca-cert.pem'))
    assert tls.credential_problems(directory, 'server', None) == [
        '%s/ca-cert.pem is not a regular file' % directory]
    nobody = QemuUser('nobody', 65534, 65534, [65534])
    assert [p for p in tls.credential_problems(directory, 'server', nobody) if 'cannot read' in p]


def test_without_tls_every_tls_parameter_is_turned_off():
    assert tls.parameters() == {'tls-creds': '', 'tls-hostname': '', 'tls-authz': ''}
    assert tls.parameters('server', peer='CN=a') == {'tls-creds': 'hvops-tls-in', 'tls-hostname': '',
                                                     'tls-authz': 'hvops-tls-authz'}
