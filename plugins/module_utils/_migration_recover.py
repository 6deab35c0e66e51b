# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deciding, after an interrupted migration, which copy of the guest to keep.

Both nodes reach the same answer from the same two status records. Pure."""

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MigrationError
from ansible_collections.hvops.kvm.plugins.module_utils._states import copy_kind


def decide(source, target):
    """Which copy to keep after an interrupted migration: 'source', 'target'
    or None (the guest runs nowhere and none of its copies may be started).
    Both nodes reach the same answer from the same two status records.

    The newest state wins: a running copy; else a target that was finalized
    (it may have run) or that holds a completed incoming migration the source
    also saw complete; else the source, whose state is the newest as long as
    the target never ran.
    """
    s, t = copy_kind(source), copy_kind(target)
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
