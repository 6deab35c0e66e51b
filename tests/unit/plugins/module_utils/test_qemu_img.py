import json
import os
import subprocess

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    ImageError, MissingBinaryError, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import (
    backing_files, find_qemu_img, image_info, parse_info, run_qemu_img, snapshot_list)
from ansible_collections.hvops.kvm.plugins.module_utils._values import size_bytes

QCOW2 = {
    'backing-filename-format': 'raw', 'virtual-size': 2097152, 'filename': '/srv/o.qcow2',
    'cluster-size': 65536, 'format': 'qcow2', 'actual-size': 208896, 'dirty-flag': False,
    'full-backing-filename': '/srv/b.raw', 'backing-filename': 'b.raw',
    'snapshots': [{'icount': 0, 'vm-clock-nsec': 5, 'name': 's1', 'date-sec': 1796236993,
                   'date-nsec': 500000000, 'vm-clock-sec': 2, 'id': '1', 'vm-state-size': 0}],
}
RAW = {'virtual-size': 1048576, 'filename': '/srv/b.raw', 'format': 'raw', 'actual-size': 4096, 'dirty-flag': False}


class Recorder:
    """run(argv) that answers from a list and keeps every argv."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        return self.answers.pop(0)


def real_run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize('text, value', [
    ('10G', 10 << 30), ('10g', 10 << 30), ('10GiB', 10 << 30), ('512M', 512 << 20), ('512MiB', 512 << 20),
    ('1.5T', 3 << 39), ('4096B', 4096), ('1048576', 1048576), (' 2K ', 2048), ('0', 0), (65536, 65536),
    ('1P', 1 << 50),
])
def test_sizes_parse(text, value):
    assert size_bytes(text) == value


@pytest.mark.parametrize('text', ['10GB', '10 G B', 'ten', '', '-1', '-1G', '1e9', '0.1K', '1.5B', '2P', True,
                                  None, 1.5, [], '10G\nx', '1Q', '10Gi', (1 << 50) + 1, -5,
                                  '1' * 21])
def test_sizes_that_do_not_parse_are_refused(text):
    with pytest.raises(ValidationError, match='size'):
        size_bytes(text)


def test_find_qemu_img():
    assert os.path.isabs(find_qemu_img())
    with pytest.raises(MissingBinaryError, match='qemu-utils'):
        find_qemu_img('/nonexistent/qemu-img')
    with pytest.raises(MissingBinaryError):
        find_qemu_img('/etc')


def test_run_qemu_img_is_an_argv_and_a_failure_carries_stderr():
    run = Recorder((0, 'ok', ''), (1, '', "qemu-img: Failed to get \"write\" lock\n"))
    assert run_qemu_img(run, ['check', '/srv/a.qcow2']) == 'ok'
    assert run.calls[0][1:] == ['check', '/srv/a.qcow2'] and os.path.isabs(run.calls[0][0])
    with pytest.raises(ImageError, match='resizing /srv/a failed .*write" lock') as caught:
        run_qemu_img(run, ['resize', '/srv/a', '1G'], what='resizing /srv/a')
    assert caught.value.details['stderr'] == 'qemu-img: Failed to get "write" lock'
    with pytest.raises(ValidationError):
        run_qemu_img(run, 'resize /srv/a 1G')


def test_info_reads_chain_snapshots_and_sizes():
    run = Recorder((0, json.dumps([QCOW2, RAW]), ''))
    info = image_info(run, '/srv/o.qcow2', force_share=True, fmt='qcow2')
    assert run.calls[0][1:] == ['info', '--output=json', '--backing-chain', '-U', '-f', 'qcow2', '/srv/o.qcow2']
    assert info == {
        'path': '/srv/o.qcow2', 'format': 'qcow2', 'virtual_size': 2097152, 'actual_size': 208896,
        'cluster_size': 65536, 'backing_chain': [{'path': '/srv/b.raw', 'format': 'raw'}], 'dirty': False,
        'snapshots': [{'name': 's1', 'id': '1', 'vm_state_size': 0, 'date': 1796236993.5,
                       'vm_clock_nsec': 2000000005}],
    }


def test_info_without_share_or_format_lets_qemu_img_lock_and_probe():
    run = Recorder((0, json.dumps(RAW), ''))
    info = image_info(run, '/srv/b.raw')
    assert run.calls[0][1:] == ['info', '--output=json', '--backing-chain', '/srv/b.raw']
    assert info['backing_chain'] == [] and info['cluster_size'] is None and info['snapshots'] == []


def test_a_relative_backing_name_is_relative_to_the_image_naming_it():
    top = dict(QCOW2, **{'full-backing-filename': 'b.raw'})
    info = parse_info(json.dumps([top, RAW]), '/srv/vm/o.qcow2')
    assert info['backing_chain'] == [{'path': '/srv/vm/b.raw', 'format': 'raw'}]


@pytest.mark.parametrize('change', [
    {'virtual-size': -1}, {'virtual-size': '10'}, {'virtual-size': True}, {'virtual-size': 1 << 63},
    {'virtual-size': None}, {'format': 'qcow2,file=/etc/shadow'}, {'format': None}, {'filename': 7},
    {'dirty-flag': 'no'}, {'snapshots': {}}, {'snapshots': [7]}, {'snapshots': [{'name': 's', 'id': 3}]},
    {'snapshots': [{'name': 's', 'id': '1', 'date-sec': -4}]}, {'full-backing-filename': 'a\0b'},
    {'full-backing-filename': 'x' * 5000}, {'cluster-size': 1.5},
])
def test_info_from_outside_is_checked(change):
    with pytest.raises(ImageError):
        parse_info(json.dumps([dict(QCOW2, **change), RAW]), '/srv/o.qcow2')


@pytest.mark.parametrize('text', ['', 'not json', '[]', '7', '"x"', json.dumps([RAW] * 257), '[7]'])
def test_info_of_the_wrong_shape_is_refused(text):
    with pytest.raises(ImageError):
        parse_info(text, '/srv/b.raw')


@pytest.mark.parametrize('path', ['rel.img', '', None, '/srv/a\0b'])
def test_info_needs_an_absolute_path(path):
    with pytest.raises(ValidationError):
        image_info(Recorder(), path)


def test_info_with_real_qemu_img(tmp_path):
    base = str(tmp_path / 'base.raw')
    top = str(tmp_path / 'top.qcow2')
    run_qemu_img(real_run, ['create', '-q', '-f', 'raw', base, '1M'])
    run_qemu_img(real_run, ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top, '2M'])
    run_qemu_img(real_run, ['snapshot', '-c', 'first', top])
    info = image_info(real_run, top, fmt='qcow2')
    assert info['format'] == 'qcow2' and info['virtual_size'] == 2 << 20 and info['cluster_size'] == 65536
    assert info['backing_chain'] == [{'path': base, 'format': 'raw'}]
    assert [s['name'] for s in info['snapshots']] == ['first']
    assert backing_files(real_run, top, fmt='qcow2') == [{'path': base, 'format': 'raw'}]
    os.unlink(base)
    with pytest.raises(ImageError, match='base.raw'):
        image_info(real_run, top)
    # One image at a time: the missing file ends the walk, the chain above it stays known.
    assert backing_files(real_run, top, fmt='qcow2') == [{'path': base, 'format': 'raw'}]


def test_snapshot_list_reads_query_block_entries_and_refuses_other_shapes():
    raw = {'name': 'two', 'id': '1', 'date-sec': 1796237027, 'date-nsec': 500000000, 'vm-clock-sec': 5,
           'vm-clock-nsec': 216220133, 'vm-state-size': 105382611}
    origin = "QEMU's query-block about /a.qcow2"
    assert snapshot_list([raw], origin) == [{'name': 'two', 'id': '1', 'vm_state_size': 105382611,
                                             'date': 1796237027.5, 'vm_clock_nsec': 5216220133}]
    for bad in ({}, [None], [[]], [{'id': '1'}], [dict(raw, name=3)], [dict(raw, **{'date-sec': -1})],
                [dict(raw, **{'vm-state-size': 'big'})], [dict(raw, **{'date-nsec': True})], [dict(raw, id=1)]):
        with pytest.raises(ImageError, match=r"^QEMU's query-block about /a\.qcow2 printed "):
            snapshot_list(bad, origin)
