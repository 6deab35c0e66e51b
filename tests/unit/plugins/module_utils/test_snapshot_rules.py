"""The pure rules of kvm_snapshot: names, disks, QMP entries, combining the
disks' lists, retention."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot_rules import (
    combine, find, iso_date, retention_victims, shown, snapshot_disks, validate_retention,
    validate_snapshot_name)


@pytest.mark.parametrize('name', ['a', 'before-upgrade', 'nightly.2026_01', '1a', 'x' * 63, '2026-01-01'])
def test_good_names(name):
    assert validate_snapshot_name(name) == name


@pytest.mark.parametrize('name', ['', None, 7, '12', '007', 'a b', '-c', '.hidden', 'a/b', 'a\n', 'x' * 64,
                                  'sn\u00e4p', 'a,b', 'a;rm'])
def test_bad_names(name):
    with pytest.raises(ValidationError):
        validate_snapshot_name(name, 'vm')


@pytest.mark.parametrize('value', [0, -1, 1001, True, '3', 2.5])
def test_bad_retention(value):
    with pytest.raises(ValidationError, match='retention'):
        validate_retention(value)


def test_retention_none_and_good():
    assert validate_retention(None) is None and validate_retention(1) == 1


def disk(path, fmt='qcow2', readonly=False):
    return {'path': path, 'format': fmt, 'readonly': readonly}


def test_snapshot_disks_skips_read_only_and_refuses_writable_raw():
    spec = {'disks': [disk('/a.qcow2'), disk('/iso.raw', 'raw', True), disk('/b.qcow2')]}
    assert snapshot_disks(spec) == [(0, '/a.qcow2'), (2, '/b.qcow2')]
    with pytest.raises(ValidationError, match=r'disk 1 \(/r.img\) is raw'):
        snapshot_disks({'disks': [disk('/a.qcow2'), disk('/r.img', 'raw')]})
    with pytest.raises(ValidationError, match='no writable disk'):
        snapshot_disks({'disks': [disk('/iso.raw', 'raw', True)]})


def item(name, date, size=0):
    return {'name': name, 'id': '1', 'date': date, 'vm_state_size': size, 'vm_clock_nsec': 0}


def test_combine_sorts_oldest_first_and_marks_incomplete():
    snapshots = combine([('/a', [item('new', 30, 100), item('old', 10)]),
                         ('/b', [item('old', 10.2), item('new', 30), item('half', 20)])])
    assert [(s['name'], s['complete'], s['vmstate'], s['disks']) for s in snapshots] == [
        ('old', True, False, ['/a', '/b']), ('half', False, False, ['/b']), ('new', True, True, ['/a', '/b'])]
    assert snapshots[0]['date'] == 10
    assert shown(snapshots)[2] == {'name': 'new', 'date': '1970-01-01T00:00:30Z', 'vm_state_size': 100,
                                   'vmstate': True, 'disks': ['/a', '/b']}


def test_iso_date():
    assert iso_date(1796237027.9) == '2026-12-02T18:43:47Z' and iso_date(None) is None


def test_find_refuses_an_inconsistent_snapshot_naming_its_disks():
    snapshots = combine([('/a', [item('s', 1)]), ('/b', [item('half', 2)])])
    assert find(snapshots, 'missing') is None
    with pytest.raises(StateError, match='exists on /b but not on every writable disk'):
        find(snapshots, 'half')


def records(*names, complete=True):
    return [{'name': name, 'date': index, 'complete': complete} for index, name in enumerate(names)]


def test_retention_keeps_the_newest_and_spares_the_named_one():
    snapshots = records('s1', 's2', 's3', 's4')
    assert retention_victims(snapshots, 2) == ['s1', 's2']
    assert retention_victims(snapshots, 4) == [] and retention_victims(snapshots, 9) == []
    # The named snapshot is kept and counted, however old.
    assert retention_victims(snapshots, 2, spare='s1') == ['s2', 's3']
    assert retention_victims(snapshots, 1, spare='s4') == ['s1', 's2', 's3']
    assert retention_victims(snapshots, 1, spare='s1') == ['s2', 's3', 's4']
    # Incomplete ones are neither counted nor deleted.
    mixed = snapshots[:2] + records('half', complete=False) + snapshots[2:]
    assert retention_victims(mixed, 2) == ['s1', 's2']
