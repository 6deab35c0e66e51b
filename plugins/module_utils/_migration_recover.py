# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deciding, after an interrupted migration, which copy of the guest to keep,
and whether a target copy whose monitor does not answer may be killed.

Both nodes reach the same answer from the same two status records. A record
from the other node is untrusted input: only exact values count. Pure."""

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MigrationError
from ansible_collections.hvops.kvm.plugins.module_utils._states import copy_kind


# How an outgoing migration ended without completing, and the run states of a
# source copy that still holds the guest after it.
UNFINISHED = ('cancelled', 'failed')
HOLDING = ('running', 'paused')


def source_kept_guest(source):
    """(True, why) when a status record of the source copy shows that its
    migration ended without completing (or never started) and that it still
    holds the guest, so the target never received the whole guest; else
    (False, why not).

    The record comes from the other node: every value must be exactly what the
    status phase writes (a string, a boolean, a pid), nothing merely truthy.
    """
    if not isinstance(source, dict):
        return False, 'no status of the source copy was given'
    pid, run_state, status = source.get('pid'), source.get('run_state'), source.get('migration_status')
    if source.get('present') is not True or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False, 'the source copy is not shown alive'
    if source.get('busy') is not False or source.get('incoming') is not False:
        return False, 'the source copy is shown busy or as a migration target'
    if not isinstance(run_state, str) or run_state not in HOLDING:
        return False, 'the source copy is not shown running or paused (run state %r)' % (run_state,)
    # None: this QEMU never started a migration (a copy migration that failed
    # while its disks were being copied), so no target has any of the guest.
    if status is not None and (not isinstance(status, str) or status not in UNFINISHED):
        return False, 'the source\'s migration is not shown cancelled or failed (status %r)' % (status,)
    if copy_kind(source) not in HOLDING:
        return False, 'the source copy is %s' % copy_kind(source)
    if status is None:
        return True, 'the source never started the migration of the guest\'s state and its copy is %s' % run_state
    return True, 'the source\'s migration ended %s and its copy is %s' % (status, run_state)


def silent_incoming(target):
    """Whether a status record taken on this node shows a live QEMU that was
    started as a migration target (-incoming, from its runtime) and never
    finalized, whose monitor did not answer."""
    return isinstance(target, dict) and target.get('present') is True and target.get('incoming') is True \
        and copy_kind(target) == 'unknown'


def may_kill_silent_target(target, source):
    """(True, why) when the target copy, whose monitor does not answer, may be
    killed: it is an unfinalized incoming QEMU (so it never ran the guest) and
    the source shows it kept the guest (so the target never received all of
    it). Otherwise (False, why not): nothing is killed that may hold the only
    complete copy, or that may run it."""
    if not silent_incoming(target):
        return False, 'the copy here is not an unfinalized migration target whose monitor is silent'
    kept, why = source_kept_guest(source)
    if not kept:
        return False, why
    return True, why + ': the target never received the whole guest, and never ran it'


def source_gone(source):
    """Whether a status record of the source (peer_status) shows its copy gone:
    then a target holding a completed incoming migration holds the only copy
    of the guest. Only the exact value counts; no record is no evidence."""
    return isinstance(source, dict) and source.get('present') is False


def decide(source, target):
    """Which copy to keep after an interrupted migration: 'source', 'target'
    or None (the guest runs nowhere and none of its copies may be started).
    Both nodes reach the same answer from the same two status records.

    A target copy whose monitor does not answer is discarded only when
    may_kill_silent_target allows it. Otherwise the newest state wins: a
    running copy; else a target that was finalized
    (it may have run) or that holds a completed incoming migration the source
    also saw complete; else the source, whose state is the newest as long as
    the target never ran.
    """
    s, t = copy_kind(source), copy_kind(target)
    if t == 'unknown' and s in HOLDING:
        allowed, why = may_kill_silent_target(target, source)
        if allowed:
            return {'keep': 'source', 'reason': '%s; the target copy does not answer' % why}
    for role, kind in (('source', s), ('target', t)):
        if kind in ('busy', 'unknown'):
            raise MigrationError('cannot decide: the %s copy is %s%s; take status again once no phase'
                                 ' runs there' % (role, kind, ' (a phase is running there)' if kind == 'busy'
                                                  else ' (its monitor did not answer)'))
    if s.startswith('incoming'):
        raise MigrationError('the copy on the source node is an unfinished migration target: are the'
                             ' roles swapped?')
    if s == 'running' and t == 'running':
        raise MigrationError('the guest runs on both nodes: refusing to choose; stop one copy by hand'
                             ' (the one whose disk writes you can lose)')
    if s == 'running':
        return {'keep': 'source', 'reason': 'the guest runs on the source'}
    if t == 'running':
        return {'keep': 'target', 'reason': 'the guest runs on the target'}
    if t == 'paused':
        return {'keep': 'target', 'reason': 'the target copy was finalized, so it may have run'}
    if t == 'incoming-complete' and (s == 'absent' or source.get('migration_status') == 'completed'):
        return {'keep': 'target', 'reason': 'the target holds the completed migration and the source'
                                            ' is %s' % ('gone' if s == 'absent' else 'migrated away')}
    if s == 'paused':
        return {'keep': 'source', 'reason': 'the source holds the newest state (the target never ran)'}
    return {'keep': None, 'reason': 'no copy holds a complete state: the guest runs nowhere and is'
                                    ' not started'}
