import os
import shutil
import stat
import tempfile

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout, validate_name


def test_paths_follow_the_layout():
    paths = NodeLayout('/run/hvops-kvm', '/var/lib/hvops-kvm').paths('web-1.example_x')
    assert paths.pidfile == '/run/hvops-kvm/pid/web-1.example_x.pid'
    assert paths.qmp == '/run/hvops-kvm/ctrl/web-1.example_x.qmp'
    assert paths.serial == '/run/hvops-kvm/ctrl/web-1.example_x.serial'
    assert paths.definition == '/var/lib/hvops-kvm/guests/web-1.example_x.json'
    assert paths.legacy_definition == '/run/hvops-kvm/conf/web-1.example_x.json'
    assert paths.policy == '/var/lib/hvops-kvm/guests/web-1.example_x.policy'
    assert paths.runtime == '/run/hvops-kvm/conf/web-1.example_x.runtime'
    assert paths.lock == '/run/hvops-kvm/lock/web-1.example_x.lock'


@pytest.mark.parametrize('name', ['..', '.', '../x', 'a/../../b', '/abs', 'a\0b', 'é', ' x', 'x' * 64, None, 7,
                                  'web\n', 'web\nx'])
def test_path_tricks_are_refused(name):
    with pytest.raises(ValidationError):
        validate_name(name)
    with pytest.raises(ValidationError):
        NodeLayout('/run/x').paths(name)


@pytest.mark.parametrize('run_dir', ['/run/a,b', '/run/a:b', '/run/a!!b', '/run/a"b', "/run/a'b", '/run/[a]',
                                     '/run/a b', '/run/a\nb', '/run/a\tb', '/run/é', '/'])
def test_run_dir_must_be_absolute_and_free_of_option_syntax(run_dir):
    with pytest.raises(ValidationError, match='absolute'):
        NodeLayout('run')
    with pytest.raises(ValidationError, match='run_dir'):
        NodeLayout(run_dir)


def test_socket_paths_longer_than_sun_path_are_refused():
    with pytest.raises(ValidationError, match='unix socket'):
        NodeLayout('/' + 'd' * 60).paths('n' * 50)


def test_ensure_creates_private_dirs_and_never_changes_an_existing_mode(tmp_path):
    fresh = NodeLayout(str(tmp_path / 'fresh' / 'run'))
    fresh.ensure()
    assert stat.S_IMODE(os.stat(fresh.run_dir).st_mode) == 0o711, 'others may pass through, not look'
    for sub in ('pid', 'ctrl', 'conf', 'lock'):
        assert stat.S_IMODE(os.stat(os.path.join(fresh.run_dir, sub)).st_mode) == 0o700, sub
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    os.chmod(str(run_dir), 0o755)
    layout = NodeLayout(str(run_dir))
    layout.ensure()
    layout.ensure()
    assert stat.S_IMODE(os.stat(str(run_dir)).st_mode) == 0o755, 'an existing directory keeps its mode'


@pytest.mark.parametrize('mode', [0o1777, 0o777, 0o770, 0o722])
def test_a_run_dir_others_may_write_is_refused_and_left_alone(tmp_path, mode):
    run_dir = tmp_path / 'shared'
    run_dir.mkdir()
    os.chmod(str(run_dir), mode)
    with pytest.raises(StateError, match='writable by its group or by others'):
        NodeLayout(str(run_dir)).ensure()
    assert stat.S_IMODE(os.stat(str(run_dir)).st_mode) == mode
    assert os.listdir(str(run_dir)) == []


def test_a_symlinked_run_dir_is_refused(tmp_path):
    real = tmp_path / 'real'
    real.mkdir(mode=0o700)
    link = tmp_path / 'link'
    link.symlink_to(real)
    with pytest.raises(StateError, match='symbolic link'):
        NodeLayout(str(link)).ensure()
    assert os.listdir(str(real)) == []


def test_a_symlinked_subdir_is_refused(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'))
    layout.ensure()
    os.rmdir(layout.subdir('conf'))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir(mode=0o700)
    os.symlink(str(elsewhere), layout.subdir('conf'))
    with pytest.raises(StateError, match='symbolic link'):
        layout.verify()


def test_a_run_dir_owned_by_another_user_is_refused(tmp_path):
    run_dir = tmp_path / 'theirs'
    run_dir.mkdir(mode=0o700)
    os.chown(str(run_dir), 65534, 65534)
    with pytest.raises(StateError, match='owned by uid 65534'):
        NodeLayout(str(run_dir)).ensure()
    assert os.listdir(str(run_dir)) == []


def test_a_run_dir_under_a_parent_others_may_write_is_refused(tmp_path):
    parent = tmp_path / 'open'
    parent.mkdir()
    os.chmod(str(parent), 0o777)
    with pytest.raises(StateError, match='not sticky'):
        NodeLayout(str(parent / 'run')).ensure()
    assert os.listdir(str(parent)) == []
    os.chmod(str(parent), 0o1777)
    NodeLayout(str(parent / 'run')).ensure()


def test_run_dir_tmp_itself_is_refused_and_keeps_its_sticky_bit():
    before = os.stat('/tmp').st_mode
    with pytest.raises(StateError):
        NodeLayout('/tmp').ensure()
    assert os.stat('/tmp').st_mode == before
    assert not os.path.exists('/tmp/conf')


def test_pid_dir_belongs_to_the_qemu_user_who_must_reach_it(tmp_path):
    from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import QemuUser
    nobody = QemuUser('nobody', 65534, 65534, [65534])
    # tmp_path lies under pytest's 0700 directory, which nobody cannot reach.
    base = tempfile.mkdtemp(prefix='hk-unit-', dir='/tmp')
    try:
        os.chmod(base, 0o711)
        layout = NodeLayout(os.path.join(base, 'run'))
        layout.ensure(nobody)
        assert os.stat(layout.subdir('pid')).st_uid == 65534
        assert os.stat(layout.subdir('conf')).st_uid == os.geteuid()
        layout.verify(nobody)
        layout.ensure(nobody)
        with pytest.raises(StateError, match='owned by uid 65534'):
            layout.verify()
    finally:
        shutil.rmtree(base)
    closed = tmp_path / 'closed'
    closed.mkdir(mode=0o700)
    with pytest.raises(StateError, match='cannot reach'):
        NodeLayout(str(closed / 'run')).ensure(nobody)


def test_defined_names_reads_conf(tmp_path):
    layout = NodeLayout(str(tmp_path))
    assert layout.defined_names() == []
    layout.ensure()
    for entry in ('b.json', 'a.runtime', 'a.json', '.x.json.tmp', 'c.vncpass', 'junk.txt'):
        (tmp_path / 'conf' / entry).write_text('{}')
    assert layout.defined_names() == ['a', 'b']


# -- state_dir: the same rules as run_dir, and what collection 0.1 left -------------
@pytest.mark.parametrize('state_dir, words', [
    ('relative/state', 'state_dir must be an absolute path'),
    ('/', 'state_dir must not be /'),
    ('/var/lib/x,y=z', 'state_dir'),
])
def test_a_state_dir_that_is_not_a_plain_absolute_path_is_refused(tmp_path, state_dir, words):
    with pytest.raises(ValidationError) as caught:
        NodeLayout(str(tmp_path / 'run'), state_dir)
    assert words in caught.value.msg


def test_a_loose_symlinked_or_foreign_state_dir_is_refused_before_run_dir_is_made(tmp_path):
    run_dir = str(tmp_path / 'run')
    loose = tmp_path / 'loose'
    loose.mkdir()
    os.chmod(str(loose), 0o777)
    real = tmp_path / 'real'
    real.mkdir(mode=0o700)
    link = tmp_path / 'link'
    link.symlink_to(real)
    theirs = tmp_path / 'theirs'
    theirs.mkdir(mode=0o700)
    os.chown(str(theirs), 65534, 65534)
    for state_dir, words in ((loose, 'writable by its group or by others'), (link, 'symbolic link'),
                             (theirs, 'owned by uid 65534')):
        with pytest.raises(StateError, match=words):
            NodeLayout(run_dir, str(state_dir)).ensure()
        assert not os.path.exists(run_dir), 'run_dir was made although state_dir was refused'
    assert os.listdir(str(loose)) == [] and os.listdir(str(real)) == []
    assert stat.S_IMODE(os.stat(str(loose)).st_mode) == 0o777


def test_take_over_moves_0_1_definitions_and_refuses_a_symlink_planted_in_conf(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    layout.ensure()
    conf = layout.subdir('conf')
    with open(os.path.join(conf, 'old.json'), 'w') as handle:
        handle.write('{"memory": 32}')
    with open(os.path.join(conf, 'old.vncpass'), 'w') as handle:
        handle.write('pw\n')
    assert layout.take_over() == ['old']
    guests = layout.state_subdir('guests')
    assert sorted(os.listdir(guests)) == ['old.json', 'old.vncpass']
    assert stat.S_IMODE(os.stat(os.path.join(guests, 'old.vncpass')).st_mode) == 0o600
    assert os.listdir(conf) == []
    # A link to a file the node must not copy (say /etc/shadow) is not followed.
    os.symlink('/etc/shadow', os.path.join(conf, 'evil.json'))
    with pytest.raises(StateError, match='not a regular file'):
        layout.take_over()
    assert not os.path.exists(os.path.join(guests, 'evil.json'))
