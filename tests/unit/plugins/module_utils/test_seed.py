"""cloud_init normalisation and the YAML the seed carries (read back with PyYAML)."""
import os

import pytest
import yaml

from ansible_collections.hvops.kvm.plugins.module_utils import _seed
from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MissingBinaryError, ProcessError, StateError, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import upgraded
from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec, shown

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0vS1H1ZyUOwWfXDt7W6kq0w5aXaGq1sU8m6fQe4ycu ops@example'
HASH = '$6$rounds=4096$saltsalt$' + 'x' * 86


def test_shortcuts_render_a_cloud_config():
    docs = _seed.normalize({'hostname': 'web1', 'ssh_authorized_keys': [KEY], 'password_hash': HASH}, 'g1')
    assert docs['user_data'].startswith('#cloud-config\n')
    user = yaml.safe_load(docs['user_data'])
    assert user == {'hostname': 'web1', 'ssh_authorized_keys': [KEY],
                    'users': ['default', {'name': 'root', 'hashed_passwd': HASH, 'lock_passwd': False}]}
    meta = yaml.safe_load(docs['meta_data'])
    assert meta['local-hostname'] == 'web1' and meta['instance-id'].startswith('g1-')
    assert docs['network_config'] is None


def test_the_same_input_gives_the_same_documents_and_a_change_a_new_instance_id():
    one = _seed.normalize({'hostname': 'web1'}, 'g1')
    assert _seed.normalize({'hostname': 'web1'}, 'g1') == one
    other = _seed.normalize({'hostname': 'web2'}, 'g1')
    assert yaml.safe_load(other['meta_data'])['instance-id'] != yaml.safe_load(one['meta_data'])['instance-id']


def test_normalising_a_normalised_spec_changes_nothing():
    spec = normalize_spec('g1', {'cloud_init': {'hostname': 'web1', 'ssh_authorized_keys': [KEY],
                                                'network_config': {'version': 2}}})
    again = normalize_spec('g1', dict((k, v) for k, v in spec.items() if k != 'name'))
    assert again == spec


def test_text_documents_are_kept_as_given():
    docs = _seed.normalize({'user_data': '#!/bin/sh\necho hi\n', 'meta_data': 'instance-id: x\n',
                            'network_config': 'version: 2\n'}, 'g1')
    assert docs == {'user_data': '#!/bin/sh\necho hi\n', 'meta_data': 'instance-id: x\n',
                    'network_config': 'version: 2\n'}


@pytest.mark.parametrize('value', [
    'yes', 'No', 'on', 'null', '~', '12', '1e3', '0x1f', '-5', ' lead', 'trail ', 'a: b', 'a #b', '#c',
    '- item', '[x]', '{x}', '*ref', '&anchor', '!tag', '"q"', "'q'", '%x', '@x', '`x', 'line\nbreak',
    'tab\there', 'ünïcödé', '\x07bell', '', ':', '?', '|', '>', '12:30', '.inf', 'true', 'False',
])
def test_hostile_strings_read_back_unchanged(value):
    data = {'key %s' % value: value, 'list': [value, {'k': value}], value or 'empty': [[value]]}
    assert yaml.safe_load(_seed.to_yaml(data, 'g1')) == data


def test_nested_structures_read_back():
    data = {'write_files': [{'path': '/etc/motd', 'content': 'hello\nworld\n', 'permissions': '0644'}],
            'runcmd': [['sh', '-c', 'echo 1'], 'echo 2'], 'empty': {}, 'none': [], 'n': None,
            'bootcmd': [{'a': {'b': [1, 2.5, True]}}]}
    assert yaml.safe_load(_seed.to_yaml(data, 'g1')) == data


@pytest.mark.parametrize('value, words', [
    ('text', 'must be a dictionary'),
    ({'bogus': 1}, 'unknown keys'),
    ({'hostname': 'bad_host!'}, 'not a valid host name'),
    ({'hostname': 'a' * 64}, 'not a valid host name'),
    ({'ssh_authorized_keys': ['not a key']}, 'OpenSSH public keys'),
    ({'ssh_authorized_keys': [KEY + '\nssh-rsa AAAA injected']}, 'OpenSSH public keys'),
    ({'ssh_authorized_keys': KEY}, 'OpenSSH public keys'),
    ({'password_hash': 'hunter2'}, 'crypt(3) hash'),
    ({'password_hash': HASH, 'password_user': 'Root; rm'}, 'not a valid user name'),
    ({'password_user': 'ops'}, 'needs password_hash'),
    ({'user_data': '#!/bin/sh\n', 'hostname': 'x'}, 'cannot be merged'),
    ({'user_data': 5}, 'text or a dictionary'),
    ({'meta_data': [1]}, 'text or a dictionary'),
    ({'network_config': 5}, 'text or a dictionary'),
    ({'user_data': 'x' * (_seed.MAX_DOCUMENT + 1)}, 'at most'),
    ({'user_data': 'a\0b'}, 'without NUL'),
    ({'user_data': {1: 'x'}}, 'keys must be text'),
    ({'user_data': {'x': {1, 2}}}, 'YAML cannot carry'),
    ({'users': 'root'}, 'must be a list'),
])
def test_bad_cloud_init_is_refused(value, words):
    with pytest.raises(ValidationError) as err:
        _seed.normalize(value, 'g1')
    assert words in err.value.msg


def test_deep_nesting_is_refused():
    value = {}
    for _level in range(_seed.MAX_DEPTH + 2):
        value = {'x': value}
    with pytest.raises(ValidationError) as err:
        _seed.normalize({'user_data': value}, 'g1')
    assert 'nested' in err.value.msg


def test_results_show_a_digest_never_the_documents():
    spec = normalize_spec('g1', {'cloud_init': {'password_hash': HASH}})
    view = shown(spec)
    assert HASH not in repr(view)
    assert view['cloud_init']['documents'] == ['meta-data', 'user-data']
    assert len(view['cloud_init']['sha256']) == 64
    assert HASH in spec['cloud_init']['user_data']


def test_old_specs_compare_equal_after_upgrade():
    spec = normalize_spec('g1', {'memory': 64})
    old = dict((k, v) for k, v in spec.items() if k not in ('guest_agent', 'cloud_init'))
    assert upgraded(old) == spec and upgraded(None) is None


def test_no_iso_maker_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_seed, 'TOOL_DIRS', ())
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(MissingBinaryError) as err:
        _seed.find_tool()
    assert 'install xorriso' in err.value.msg


def test_the_first_iso_maker_found_is_used(monkeypatch, tmp_path):
    for program in ('genisoimage', 'xorriso'):
        path = tmp_path / program
        path.write_text('#!/bin/sh\n')
        path.chmod(0o755)
    monkeypatch.setattr(_seed, 'TOOL_DIRS', ())
    monkeypatch.setenv('PATH', str(tmp_path))
    assert _seed.find_tool() == [str(tmp_path / 'xorriso'), '-as', 'mkisofs']


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_seed, 'find_tool', lambda: ['/usr/bin/xorriso', '-as', 'mkisofs'])
    work, seeds = tmp_path / 'conf', tmp_path / 'seed'
    work.mkdir()
    seeds.mkdir()
    calls = []

    def failing(argv):
        calls.append(argv)
        assert sorted(os.listdir(argv[-1])) == ['meta-data', 'user-data']
        return 1, '', 'xorriso : FAILURE : no space left'

    docs = _seed.normalize({'hostname': 'web1'}, 'g1')
    with pytest.raises(ProcessError) as err:
        _seed.build(failing, docs, str(seeds / 'g1.iso'), str(work))
    assert 'no space left' in err.value.msg and calls[0][-5:-1] == ['-V', 'cidata', '-J', '-r']
    assert os.listdir(str(work)) == [] and os.listdir(str(seeds)) == []
    with pytest.raises(StateError) as err:
        _seed.build(failing, docs, str(seeds / 'g1.iso'), str(tmp_path / 'missing'))
    assert 'could not make the cloud-init seed image' in err.value.msg
