"""The storage facts of kvm_node_facts (_node_storage): storage_paths checked,
the directories of the instances' writable disks, and per file system the
free and total bytes of directories made by the test."""
import os

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _nodeinfo
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._node_storage import (
    MAX_PATHS, check_paths, disk_directories, storage_facts)


def test_storage_paths_are_sorted_and_deduplicated():
    assert check_paths(None) == [] and check_paths([]) == []
    assert check_paths(['/srv/b', '/srv/a', '/srv/b', '/']) == ['/', '/srv/a', '/srv/b']


@pytest.mark.parametrize('value', [
    'srv', ['srv/images'], ['/srv/images/'], ['/srv/../etc'], ['/srv/./x'], ['//srv'], ['/srv//x'],
    ['/srv\n/x'], ['/srv\0x'], [7], [None], ['/d%d' % n for n in range(MAX_PATHS + 1)],
])
def test_bad_storage_paths_are_refused(value):
    with pytest.raises(ValidationError, match='storage_paths'):
        check_paths(value)


def test_the_directories_of_writable_disks_only():
    specs = [
        {'disks': [{'path': '/srv/a/one.qcow2', 'readonly': False}, {'path': '/iso/x.iso', 'readonly': True}]},
        {'disks': [{'path': '/srv/a/two.raw', 'readonly': False}, {'path': '/srv/b/three.raw', 'readonly': False}]},
        None, {}, {'disks': None}, {'disks': [None, 'x', {'path': 'relative', 'readonly': False},
                                              {'path': '/no/readonly/key'}]},
        'junk',
    ]
    assert disk_directories(specs) == ['/srv/a', '/srv/b']


def test_each_file_system_once_with_its_free_and_total_bytes_and_missing_directories(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir()
    two.mkdir()
    (tmp_path / 'file').write_text('x')
    paths = [str(two), str(one), str(tmp_path / 'nothere'), str(tmp_path / 'file'), str(one)]
    facts = storage_facts(paths)
    assert facts['missing'] == [str(tmp_path / 'file'), str(tmp_path / 'nothere')]
    [filesystem] = facts['filesystems']
    assert filesystem['device'] == os.stat(str(one)).st_dev
    assert filesystem['paths'] == [str(one), str(two)]
    space = os.statvfs(str(one))
    assert filesystem['total_bytes'] == space.f_blocks * space.f_frsize
    # Others write meanwhile: within a few MiB of what statvfs says now.
    assert abs(filesystem['free_bytes'] - space.f_bavail * space.f_frsize) < 64 << 20
    assert 0 < filesystem['free_bytes'] <= filesystem['total_bytes']


def test_directories_on_two_file_systems_give_two_entries(tmp_path):
    other = '/proc' if os.stat('/proc').st_dev != os.stat(str(tmp_path)).st_dev else None
    assert other, '/proc lies on its own file system'
    facts = storage_facts([str(tmp_path), other])
    assert sorted(entry['paths'][0] for entry in facts['filesystems']) == [other, str(tmp_path)]
    assert facts['filesystems'][0]['paths'] == [other], 'sorted by first path'
    assert len(set(entry['device'] for entry in facts['filesystems'])) == 2
    assert facts['missing'] == []


def test_gather_storage_reads_the_instances_disks_and_the_paths_asked_for(tmp_path):
    from ansible_collections.hvops.kvm.plugins.module_utils._runtime import save_definition
    from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec

    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    layout.ensure()
    images = tmp_path / 'images'
    images.mkdir()
    spec = normalize_spec('vm1', {'memory': 64, 'disks': [
        {'path': str(images / 'vm1.qcow2'), 'format': 'qcow2'},
        {'path': str(tmp_path / 'iso' / 'cd.iso'), 'format': 'raw', 'readonly': True}]})
    save_definition(layout.paths('vm1'), spec)
    gone = normalize_spec('vm2', {'memory': 64, 'disks': [{'path': str(tmp_path / 'gone' / 'vm2.raw')}]})
    save_definition(layout.paths('vm2'), gone)

    def run(argv):
        raise AssertionError('the storage subset runs nothing: %r' % argv)

    facts = _nodeinfo.gather(run, run_dir=layout.run_dir, state_dir=layout.state_dir, gather_subset=['storage'],
                             storage_paths=[str(tmp_path)])
    assert sorted(facts) == ['gather_subset', 'problems', 'run_dir', 'state_dir', 'storage']
    storage = facts['storage']
    assert storage['missing'] == [str(tmp_path / 'gone')], 'the read-only disk\'s directory is not asked'
    assert [entry['paths'] for entry in storage['filesystems']] == [[str(tmp_path), str(images)]]
    assert facts['problems'] == []
    with pytest.raises(ValidationError, match='storage_paths'):
        _nodeinfo.gather(run, run_dir=layout.run_dir, state_dir=layout.state_dir, gather_subset=['storage'],
                         storage_paths=['relative'])
