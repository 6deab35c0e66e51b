"""The hvops.kvm.copied_disks filter: the writable disks of prepared guests
with their paths on a target, as the accept phase maps them."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.filter.copied_disks import FilterModule, copied_disks

MIB = 1024 * 1024
DISKS = {
    'web': [{'index': 0, 'path': '/var/lib/images/web.qcow2', 'format': 'qcow2', 'virtual_size': 10 * MIB,
             'readonly': False},
            {'index': 1, 'path': '/iso/tools.iso', 'format': 'raw', 'virtual_size': MIB, 'readonly': True},
            {'index': 2, 'path': '/var/lib/images/sub/web-data.raw', 'format': 'raw', 'virtual_size': 2 * MIB,
             'readonly': False}],
    'db': [{'index': 0, 'path': '/data/db.raw', 'format': 'raw', 'virtual_size': 4 * MIB, 'readonly': False}],
    # Nothing to copy, or a description that cannot be: left out.
    'cd': [{'index': 0, 'path': '/iso/cd.iso', 'format': 'raw', 'virtual_size': MIB, 'readonly': True}],
    'odd': [{'index': 0, 'path': 'relative.raw', 'format': 'raw', 'virtual_size': MIB, 'readonly': False}],
    'none': None,
}


def test_the_filter_is_registered():
    assert FilterModule().filters() == {'copied_disks': copied_disks}


def test_writable_disks_with_their_mapped_paths_by_instance_then_index():
    found = copied_disks(DISKS, {'/var/lib/images': '/srv/images', '/var/lib/images/sub': '/srv/sub'})
    assert found == [
        {'instance': 'db', 'index': 0, 'source_path': '/data/db.raw', 'path': '/data/db.raw',
         'directory': '/data', 'size': 4 * MIB},
        {'instance': 'web', 'index': 0, 'source_path': '/var/lib/images/web.qcow2',
         'path': '/srv/images/web.qcow2', 'directory': '/srv/images', 'size': 10 * MIB},
        {'instance': 'web', 'index': 2, 'source_path': '/var/lib/images/sub/web-data.raw',
         'path': '/srv/sub/web-data.raw', 'directory': '/srv/sub', 'size': 2 * MIB},
    ]
    assert copied_disks({}) == [] and copied_disks({'web': DISKS['web']})[0]['path'] == '/var/lib/images/web.qcow2'


@pytest.mark.parametrize('disks, storage_map, message', [
    ([], {}, 'must be a dictionary'),
    ({}, {'/a': 'relative'}, "storage_map: 'relative' is not an absolute"),
    ({}, '/a', 'storage_map must be a dictionary'),
])
def test_bad_input_is_an_error_naming_it(disks, storage_map, message):
    with pytest.raises(AnsibleFilterError, match='copied_disks: .*' + message):
        copied_disks(disks, storage_map)
