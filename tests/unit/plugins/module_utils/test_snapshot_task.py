"""kvm_snapshot's decisions that need no QEMU: what it refuses before it
looks at any disk."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _snapshot
from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError


def params(tmp_path, **more):
    base = dict(name='vm', snapshot='s1', state='present', run_dir=str(tmp_path / 'run'),
                state_dir=str(tmp_path / 'state'), run_as='root')
    base.update(more)
    return base


def never_run(argv):
    raise AssertionError('ran %r' % (argv,))


@pytest.mark.parametrize('state', ['incoming', 'migrating', 'migrated', 'unknown', 'shutdown'])
def test_a_guest_in_a_migration_or_unknown_state_is_refused(tmp_path, monkeypatch, state):
    monkeypatch.setattr(_snapshot, 'observe', lambda instance, strict=False: {'state': state})
    with pytest.raises(StateError, match='is %s .*refusing to touch its snapshots' % state):
        _snapshot.run_task(params(tmp_path), never_run)
    assert not (tmp_path / 'run').exists()


def test_an_unknown_instance_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValidationError, match='no such instance'):
        _snapshot.run_task(params(tmp_path), never_run)
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'state').exists()


@pytest.mark.parametrize('more, words', [
    ({'snapshot': '42'}, 'not only digits'),
    ({'retention': 0}, 'retention must be'),
    ({'state': 'absent', 'retention': 2}, 'state present only'),
    ({'timeout': 0}, 'timeout must be'),
])
def test_bad_options_are_refused_before_looking(tmp_path, monkeypatch, more, words):
    monkeypatch.setattr(_snapshot, 'observe', never_run)
    with pytest.raises(ValidationError, match=words):
        _snapshot.run_task(params(tmp_path, **more), never_run)
