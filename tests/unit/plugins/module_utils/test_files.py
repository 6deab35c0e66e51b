import os
import stat

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError
from ansible_collections.hvops.kvm.plugins.module_utils._files import read_json, remove_quietly, write_json
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import (
    load_runtime, make_runtime, save_runtime)


def test_json_round_trip_is_atomic_and_private(tmp_path):
    path = str(tmp_path / 'x.json')
    write_json(path, {'b': 1, 'a': [1, 2]})
    assert read_json(path) == {'a': [1, 2], 'b': 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write_json(path, {'c': 3})
    assert read_json(path) == {'c': 3}
    assert os.listdir(str(tmp_path)) == ['x.json'], 'no temp file left behind'


def test_read_json_of_nothing_is_none(tmp_path):
    assert read_json(str(tmp_path / 'nope')) is None


def test_remove_quietly_reports_what_it_removed(tmp_path):
    (tmp_path / 'a').write_text('')
    assert remove_quietly(str(tmp_path / 'a'), str(tmp_path / 'b')) == [str(tmp_path / 'a')]


def test_runtime_keeps_the_exact_argv(tmp_path):
    layout = NodeLayout(str(tmp_path))
    layout.ensure()
    paths = layout.paths('web')
    argv = ['/usr/bin/qemu-system-x86_64', '-name', 'web', '-append', 'root=/dev/vda ro quiet']
    save_runtime(paths, make_runtime(argv, {'name': 'web'}, 'tcg', (7, 2, 22)))
    runtime = load_runtime(paths, 'web')
    assert runtime['argv'] == argv and runtime['accel'] == 'tcg'
    assert runtime['qemu_version'] == [7, 2, 22]
    assert load_runtime(layout.paths('other')) is None


def test_a_foreign_runtime_file_is_an_error(tmp_path):
    layout = NodeLayout(str(tmp_path))
    layout.ensure()
    paths = layout.paths('web')
    write_json(paths.runtime, ['kvm', '-m', '512'])
    with pytest.raises(StateError, match='format'):
        load_runtime(paths, 'web')
