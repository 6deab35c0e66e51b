"""The one vocabulary: QEMU's run states and migration statuses in the
collection's state words."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _states as states


@pytest.mark.parametrize('run_state, incoming, migration, state', [
    ('running', False, None, 'running'),
    ('running', False, 'active', 'migrating'),
    ('running', False, 'completed', 'running'),
    ('paused', False, 'setup', 'migrating'),
    ('paused', False, None, 'paused'),
    ('prelaunch', False, None, 'paused'),
    ('paused', True, 'completed', 'incoming'),
    ('inmigrate', True, 'active', 'incoming'),
    ('postmigrate', False, 'completed', 'migrated'),
    ('finish-migrate', False, 'device', 'migrating'),
    ('guest-panicked', False, None, 'crashed'),
    ('shutdown', False, None, 'shutdown'),
    ('colo', False, None, 'colo'),
])
def test_guest_state(run_state, incoming, migration, state):
    assert states.guest_state(run_state, incoming, migration) == state


def test_the_word_sets():
    assert set(states.LIVE) | set(states.DOWN) < set(states.RUN_STATES.values()) | {'stopped'}
    assert set(states.IDLE) == set(states.DOWN) | {'shutdown'}
    assert set(states.POSTCOPY) < set(states.OUTGOING_MIGRATION)
    assert not set(states.MIGRATION_ENDED) & set(states.OUTGOING_MIGRATION)
    assert states.copy_kind(None) == 'unknown' and states.copy_kind({'present': False}) == 'absent'
