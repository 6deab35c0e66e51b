import os
import stat

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import HostLayout, validate_name


def test_paths_follow_the_layout():
    paths = HostLayout('/run/hvops-kvm').paths('web-1.example_x')
    assert paths.pidfile == '/run/hvops-kvm/pid/web-1.example_x.pid'
    assert paths.qmp == '/run/hvops-kvm/ctrl/web-1.example_x.qmp'
    assert paths.serial == '/run/hvops-kvm/ctrl/web-1.example_x.serial'
    assert paths.definition == '/run/hvops-kvm/conf/web-1.example_x.json'
    assert paths.runtime == '/run/hvops-kvm/conf/web-1.example_x.runtime'
    assert paths.lock == '/run/hvops-kvm/lock/web-1.example_x.lock'


@pytest.mark.parametrize('name', ['..', '.', '../x', 'a/../../b', '/abs', 'a\0b', 'é', ' x', 'x' * 64, None, 7])
def test_path_tricks_are_refused(name):
    with pytest.raises(ValidationError):
        validate_name(name)
    with pytest.raises(ValidationError):
        HostLayout('/run/x').paths(name)


def test_run_dir_must_be_absolute_and_comma_free():
    with pytest.raises(ValidationError, match='absolute'):
        HostLayout('run')
    with pytest.raises(ValidationError, match='comma'):
        HostLayout('/run/a,b')


def test_socket_paths_longer_than_sun_path_are_refused():
    with pytest.raises(ValidationError, match='unix socket'):
        HostLayout('/' + 'd' * 60).paths('n' * 50)


def test_ensure_creates_private_dirs_and_tightens_modes(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir(mode=0o755)
    os.chmod(str(run_dir), 0o755)
    layout = HostLayout(str(run_dir))
    layout.ensure()
    for sub in ('', 'pid', 'ctrl', 'conf', 'lock', 'ifup'):
        mode = stat.S_IMODE(os.stat(str(run_dir / sub)).st_mode)
        assert mode == 0o700, sub
    layout.ensure()


def test_defined_names_reads_conf(tmp_path):
    layout = HostLayout(str(tmp_path))
    assert layout.defined_names() == []
    layout.ensure()
    for entry in ('b.json', 'a.runtime', 'a.json', '.x.json.tmp', 'c.vncpass', 'junk.txt'):
        (tmp_path / 'conf' / entry).write_text('{}')
    assert layout.defined_names() == ['a', 'b']
