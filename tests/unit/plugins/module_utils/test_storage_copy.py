"""The pure parts of _storage_copy: where a target puts copied disks, and what
it takes from a source (the disks' description) and a source from a target
(the NBD exports), both untrusted."""
import os

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _storage_copy as copy
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec

MIB = 1024 * 1024


def spec_with(*disks):
    return normalize_spec('vm1', {'memory': 64, 'machine': 'pc', 'disks': list(disks)})


SPEC = spec_with({'path': '/srv/a/vm1.qcow2', 'format': 'qcow2'}, {'path': '/srv/iso/tools.iso', 'readonly': True},
                 {'path': '/srv/a/sub/data.raw'})
DISKS = [{'index': 0, 'path': '/srv/a/vm1.qcow2', 'format': 'qcow2', 'virtual_size': 64 * MIB, 'readonly': False},
         {'index': 1, 'path': '/srv/iso/tools.iso', 'format': 'raw', 'virtual_size': None, 'readonly': True},
         {'index': 2, 'path': '/srv/a/sub/data.raw', 'format': 'raw', 'virtual_size': MIB, 'readonly': False}]


@pytest.mark.parametrize('path, expected', [
    ('/srv/a/vm1.qcow2', '/data/b/vm1.qcow2'),
    ('/srv/a/sub/x.raw', '/data/sub-b/x.raw'),      # the longest source directory wins
    ('/srv/ab/vm1.qcow2', '/srv/ab/vm1.qcow2'),     # a directory, not a string prefix
    ('/elsewhere/vm1.raw', '/elsewhere/vm1.raw'),
])
def test_mapped_path(path, expected):
    assert copy.mapped_path(path, {'/srv/a': '/data/b', '/srv/a/sub': '/data/sub-b'}) == expected


@pytest.mark.parametrize('value', [
    'x', ['/a'], {'a': '/b'}, {'/a': 'b'}, {'/a/../etc': '/b'}, {'/a': '/b/'}, {'/a': '/b\n/c'},
    {'/a': 1}, dict(('/d%d' % i, '/e') for i in range(65)),
])
def test_bad_storage_maps_are_refused(value):
    with pytest.raises(ValidationError, match='storage_map'):
        copy.check_storage_map(value)


def test_plan_maps_the_writable_disks_of_spec_and_definition_and_leaves_read_only_ones():
    definition = dict(SPEC, memory=128)
    spec, moved_definition, copies = copy.plan('vm1', SPEC, definition, DISKS, {'/srv/a': '/data/b'})
    assert [d['path'] for d in spec['disks']] == ['/data/b/vm1.qcow2', '/srv/iso/tools.iso', '/data/b/sub/data.raw']
    assert [d['path'] for d in moved_definition['disks']] == [d['path'] for d in spec['disks']]
    assert moved_definition['memory'] == 128
    assert copies == [
        {'index': 0, 'drive': 'disk0', 'source_path': '/srv/a/vm1.qcow2', 'path': '/data/b/vm1.qcow2',
         'format': 'qcow2', 'size': 64 * MIB},
        {'index': 2, 'drive': 'disk2', 'source_path': '/srv/a/sub/data.raw', 'path': '/data/b/sub/data.raw',
         'format': 'raw', 'size': MIB}]
    assert SPEC['disks'][0]['path'] == '/srv/a/vm1.qcow2'      # the input is not changed


def tampered(position, **change):
    disks = [dict(d) for d in DISKS]
    disks[position].update(change)
    return disks


@pytest.mark.parametrize('disks', [
    None, 'disks', DISKS[:2], DISKS + [DISKS[0]],
    tampered(0, virtual_size=0), tampered(0, virtual_size=-512), tampered(0, virtual_size=1000),
    tampered(0, virtual_size=True), tampered(0, virtual_size='67108864'), tampered(0, virtual_size=1 << 60),
    tampered(0, virtual_size=64.0 * MIB), tampered(0, format='raw'), tampered(0, path='/etc/shadow'),
    tampered(0, index=2), tampered(2, index='2'),
])
def test_a_tampered_description_of_the_disks_is_refused(disks):
    with pytest.raises(ValidationError, match='disks'):
        copy.plan('vm1', SPEC, None, disks, {})


def test_two_disks_mapped_to_one_path_are_refused():
    spec = spec_with({'path': '/srv/a/x.raw'}, {'path': '/srv/b/x.raw'})
    disks = [{'index': i, 'path': d['path'], 'format': 'raw', 'virtual_size': MIB} for i, d in enumerate(spec['disks'])]
    with pytest.raises(ValidationError, match='same path'):
        copy.plan('vm1', spec, None, disks, {'/srv/a': '/t', '/srv/b': '/t'})


def test_a_guest_without_writable_disks_has_nothing_to_copy():
    spec = spec_with({'path': '/srv/iso/tools.iso', 'readonly': True})
    with pytest.raises(ValidationError, match='no writable disk'):
        copy.plan('vm1', spec, None, [DISKS[1]], {})


def test_described_copies_are_the_plans_from_the_description_alone():
    assert copy.described_copies('vm1', DISKS, {'/srv/a': '/data/b'}) == \
        copy.plan('vm1', SPEC, None, DISKS, {'/srv/a': '/data/b'})[2]
    # A disk without readonly counts as read-only: it is not copied.
    disks = [dict(DISKS[0]), dict(DISKS[2], index=1)]
    del disks[0]['readonly']
    assert [c['source_path'] for c in copy.described_copies('vm1', disks, {})] == ['/srv/a/sub/data.raw']


@pytest.mark.parametrize('disks, words', [
    (None, 'list of the guest'), ({'0': DISKS[0]}, 'list of the guest'), ([DISKS[0], 'x'], 'list of the guest'),
    (tampered(0, path='relative.qcow2'), 'normalised path'), (tampered(0, path=None), 'normalised path'),
    (tampered(0, path='/srv/a/../../etc/shadow'), 'normalised path'),
    (tampered(0, virtual_size=1000), 'multiple of 512'),
    ([DISKS[1]], 'no writable disk'),
])
def test_described_copies_refuse_a_bad_description(disks, words):
    with pytest.raises(ValidationError, match=words):
        copy.described_copies('vm1', disks, {})


def test_room_needed_is_the_virtual_sizes_plus_the_margin():
    assert copy.room_needed(0) == copy.SPACE_MARGIN == 64 * MIB
    assert copy.room_needed(10 * MIB) == 74 * MIB


def test_problems_a_target_finds(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'there.raw').write_bytes(b'')
    copies = [
        {'index': 0, 'path': str(tmp_path / 'images' / 'there.raw'), 'size': MIB},
        {'index': 1, 'path': str(tmp_path / 'nowhere' / 'x.raw'), 'size': MIB},
        {'index': 2, 'path': str(tmp_path / 'run' / 'x.raw'), 'size': MIB},
        {'index': 3, 'path': str(tmp_path / 'images' / 'huge.raw'), 'size': 1 << 50},
        {'index': 4, 'path': str(tmp_path / 'images' / 'fine.raw'), 'size': MIB},
    ]
    found = copy.problems(copies, layout)
    assert any('there.raw already exists' in p for p in found)
    assert any('nowhere does not exist' in p for p in found)
    assert any('inside %s' % layout.run_dir in p for p in found)
    assert any('MiB free' in p for p in found)
    assert not any('fine.raw' in p for p in found)
    assert copy.problems(copies[4:], layout) == []


SPEC_NBD = spec_with({'path': '/srv/a/vm1.qcow2', 'format': 'qcow2'}, {'path': '/srv/iso/t.iso', 'readonly': True},
                     {'path': '/srv/a/d.raw'})


def test_check_nbd_takes_one_export_per_copied_disk():
    nbd = {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, {'index': 2, 'name': 'disk2'}]}
    assert copy.check_nbd('vm1', nbd, SPEC_NBD) == {'port': 10809, 'exports': {0: 'disk0', 2: 'disk2'}}


@pytest.mark.parametrize('nbd', [
    None, [], {'port': 0, 'exports': []}, {'port': '10809', 'exports': [{'index': 0, 'name': 'disk0'}]},
    {'port': True, 'exports': []},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}]},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, {'index': 1, 'name': 'disk1'}]},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, {'index': 0, 'name': 'disk0'}]},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, {'index': 2, 'name': 'disk2,x=y'}]},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, {'index': 2, 'name': 'disk0'}]},
    {'port': 10809, 'exports': [{'index': 0, 'name': 'disk0'}, 'disk2']},
])
def test_check_nbd_refuses_anything_else(nbd):
    with pytest.raises(ValidationError, match='nbd'):
        copy.check_nbd('vm1', nbd, SPEC_NBD)


def test_mirror_arguments_copy_in_full_with_a_64_mib_buffer_and_the_bandwidth_cap():
    assert copy.mirror_arguments(2, 'hvops-mirror-2', 'hvops-nbd-2') == {
        'job-id': 'hvops-mirror-2', 'device': 'disk2', 'target': 'hvops-nbd-2', 'sync': 'full',
        'auto-dismiss': False, 'buf-size': 64 * MIB}
    capped = copy.mirror_arguments(0, 'hvops-mirror-0', 'hvops-nbd-0', bandwidth_mib=4)
    assert capped['speed'] == 4 * MIB and capped['buf-size'] == 64 * MIB


def test_created_reads_only_absolute_paths_from_a_runtime():
    runtime = {'migration': {'storage': {'created': ['/data/b/x.raw', 'rel.raw', 7]}}}
    assert copy.created(runtime) == ['/data/b/x.raw']
    assert copy.created(None) == [] and copy.created({'migration': None}) == []


def test_remove_images_skips_those_gone(tmp_path):
    there = tmp_path / 'x.raw'
    there.write_bytes(b'')
    copy.remove_images([str(there), str(tmp_path / 'gone.raw')])
    assert not os.path.exists(str(there))
