import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._disk import checked_request, file_mode, image_path
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError


@pytest.mark.parametrize('value, path', [
    ('/srv/a.qcow2', '/srv/a.qcow2'), ('/srv//a.raw', '/srv/a.raw'), ('//srv/./a', '/srv/a'),
    ('/srv/a b,c:d.img', '/srv/a b,c:d.img'),
])
def test_image_paths_are_normalised(value, path):
    assert image_path(value, 'path') == path


@pytest.mark.parametrize('value, words', [
    ('a.qcow2', 'absolute'), ('./a', 'absolute'), ('', 'absolute'), (None, 'absolute'), (7, 'absolute'),
    ('/srv/../etc/shadow', '".."'), ('/srv/..', '".."'), ('/srv/a\0b', 'control'), ('/srv/a\nb', 'control'),
    ('/srv/a\x1bb', 'control'), ('/', 'name a file'), ('~/a.img', 'absolute'),
])
def test_bad_image_paths_are_refused(value, words):
    with pytest.raises(ValidationError, match=words):
        image_path(value, 'path')


@pytest.mark.parametrize('value, mode', [('0600', 0o600), ('640', 0o640), ('0660', 0o660), (0o600, 0o600),
                                         (None, None)])
def test_modes(value, mode):
    assert file_mode(value) == mode


@pytest.mark.parametrize('value', ['0666', '0602', '4600', '2660', '1600', 'rw', '0o600', 0o4600, True,
                                   '08', -1])
def test_bad_modes_are_refused(value):
    with pytest.raises(ValidationError):
        file_mode(value)


def request(**params):
    return checked_request(dict({'path': '/srv/a.qcow2'}, **params))


def test_a_request_is_normalised():
    req = request(size='1.5G', cluster_size='128K', format='qcow2', preallocation='metadata',
                  backing_file='/srv//base.raw', backing_format='raw', mode='0640')
    assert req['size'] == 3 << 29 and req['cluster_size'] == 131072 and req['backing_file'] == '/srv/base.raw'
    assert req['mode'] == 0o640 and req['shrink'] is False and req['owner'] is None
    assert checked_request({'path': '/srv/a', 'state': 'absent', 'size': 'nonsense'}) == \
        {'state': 'absent', 'path': '/srv/a'}


@pytest.mark.parametrize('params, words', [
    ({'state': 'gone'}, 'state'),
    ({'format': 'vmdk'}, 'format'),
    ({'size': '1000'}, '512-byte'),
    ({'size': 0}, 'more than 0'),
    ({'size': '2P'}, 'size must be from'),
    ({'backing_file': '/srv/a.qcow2', 'backing_format': 'raw'}, 'itself'),
    ({'backing_file': '/srv/b', 'backing_format': None}, 'backing_format'),
    ({'backing_file': '/srv/b', 'backing_format': 'raw', 'format': 'raw'}, 'raw image cannot'),
    ({'backing_format': 'raw'}, 'only meaningful'),
    ({'source': '/srv/a.qcow2'}, 'another image'),
    ({'source': '/srv/b', 'backing_file': '/srv/c', 'backing_format': 'raw'}, 'exclude'),
    ({'source': '/srv/b', 'source_format': 'iso'}, 'source_format'),
    ({'source_format': 'raw'}, 'only meaningful'),
    ({'preallocation': 'some'}, 'preallocation'),
    ({'preallocation': 'metadata', 'format': 'raw'}, 'does not apply'),
    ({'cluster_size': '4M'}, 'power of two'),
    ({'cluster_size': '256'}, 'power of two'),
    ({'cluster_size': '96K'}, 'power of two'),
    ({'cluster_size': '64K', 'format': 'raw'}, 'qcow2 images only'),
    ({'shrink': 'yes'}, 'shrink'),
    ({'owner': 'no-such-user-hvops'}, 'not a user'),
    ({'group': 'no-such-group-hvops'}, 'not a group'),
    ({'owner': '4000000000'}, 'not a user'),
])
def test_bad_requests_are_refused(params, words):
    with pytest.raises(ValidationError, match=words):
        request(**params)
