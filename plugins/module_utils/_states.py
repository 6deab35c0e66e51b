# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The words for what a guest is, and how QEMU's own words map onto them. Pure.

Every module, role and filter of the collection speaks these words:

state (one instance on one node)
    running, paused, incoming (a migration target waiting to be finalized),
    migrating (its outgoing migration is under way), migrated (moved away,
    QEMU still here), shutdown, crashed (QEMU gone, files left), stopped, and
    unknown (the monitor did not answer).
kind (one copy of a guest, as a migration sees it)
    absent, running, paused, incoming-complete, incoming-partial, busy (a
    phase holds the lock there) or unknown.
"""

# query-status run states -> states
RUN_STATES = {
    'running': 'running',
    'paused': 'paused',
    'prelaunch': 'paused',
    'suspended': 'paused',
    'inmigrate': 'incoming',
    'finish-migrate': 'migrating',
    'postmigrate': 'migrated',
    'shutdown': 'shutdown',
    'internal-error': 'crashed',
    'io-error': 'paused',
    'guest-panicked': 'crashed',
    'watchdog': 'paused',
}
# A QEMU holds the guest and kvm_instance manages it.
LIVE = ('running', 'paused')
# No QEMU: nothing of the guest is present on the node.
DOWN = ('stopped', 'crashed')
# Nothing runs guest code: there is nothing to move or to keep running.
IDLE = DOWN + ('shutdown',)

# Run states a graceful stop resumes from (a paused guest cannot see the power
# button), and run states in which no guest code has run yet.
RESUME_TO_POWER_OFF = ('paused', 'suspended', 'io-error', 'watchdog')
NEVER_RAN = ('prelaunch', 'inmigrate')

# query-migrate statuses: an outgoing migration under way, one that has ended,
# and postcopy (the guest's memory is split between the nodes).
OUTGOING_MIGRATION = ('setup', 'active', 'pre-switchover', 'device', 'wait-unplug',
                      'postcopy-active', 'postcopy-paused', 'postcopy-recover', 'cancelling')
MIGRATION_ENDED = ('completed', 'failed', 'cancelled')
POSTCOPY = ('postcopy-active', 'postcopy-paused', 'postcopy-recover')


def guest_state(run_state, incoming=False, migration_status=None):
    """The state of a live QEMU from its run state, whether it was started as a
    migration target, and its query-migrate status."""
    state = RUN_STATES.get(run_state, run_state)
    if state in LIVE and migration_status in OUTGOING_MIGRATION:
        return 'migrating'
    if state == 'paused' and incoming:
        # A migration target waiting to be finalized is not a paused guest:
        # only kvm_migrate may resume it.
        return 'incoming'
    return state


def copy_kind(record):
    """What one copy of a guest is, from an observation record (see _observe)."""
    if not isinstance(record, dict):
        return 'unknown'
    if record.get('busy'):
        return 'busy'
    if not record.get('present'):
        return 'absent'
    run_state = record.get('run_state')
    if not run_state:
        return 'unknown'
    if run_state == 'running':
        return 'running'
    if record.get('incoming'):
        if run_state == 'paused' and record.get('migration_status') == 'completed':
            return 'incoming-complete'
        return 'incoming-partial'
    return 'paused'
