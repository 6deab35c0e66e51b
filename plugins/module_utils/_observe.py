# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way to see what an instance is on this node.

kvm_instance, kvm_migrate and kvm_node_facts all look through ``observe``
(and ``ask``, its QMP half), so they report the same state in the same words
(_states). The QEMU is found through _identity (pidfile lock plus cmdline);
its monitor is opened only when asked and never when another run holds the
instance's lock (it may hold the monitor for a whole migration).
"""

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError
from ansible_collections.hvops.kvm.plugins.module_utils._identity import process_state
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import has_definition, is_incoming
from ansible_collections.hvops.kvm.plugins.module_utils._states import copy_kind, guest_state

# /proc/PID/stat states of a process that runs no code until it is continued.
STOPPED = ('T', 't')


def ask(qmp):
    """(run_state, migration status) from one QMP session."""
    run_state = qmp.execute('query-status')['status']
    return run_state, (qmp.execute('query-migrate') or {}).get('status')


def observe(instance, busy=False, query=True, strict=False):
    """The record of one instance here: present, pid, state, run_state,
    migration_status, incoming, busy, defined, error and kind.

    ``busy``: another run holds the instance's lock; its live QEMU is then
    'unknown' without a monitor being opened. Without ``query`` no monitor is
    opened either (a live QEMU's state is then None). A monitor that does not
    answer makes the state 'unknown', or with ``strict`` raises MonitorError;
    so does a QEMU that is stopped (SIGSTOP, a debugger), without waiting out
    the monitor's timeout: a stopped process cannot answer.
    """
    pid = instance.pid()
    runtime = instance.runtime()
    record = {
        'present': pid is not None, 'pid': pid, 'state': None, 'run_state': None,
        'migration_status': None, 'incoming': is_incoming(runtime), 'busy': busy,
        'defined': has_definition(instance.paths), 'error': None,
    }
    if pid is None:
        record['state'] = instance.dead_state()
    elif busy:
        record['state'] = 'unknown'
    elif query:
        try:
            stopped = process_state(pid)
            if stopped in STOPPED:
                raise MonitorError('QEMU pid %d is stopped (process state %s: SIGSTOP, a freezer or a debugger);'
                                   ' its monitor cannot answer' % (pid, stopped), instance=instance.name)
            with instance.monitor() as qmp:
                run_state, migration = ask(qmp)
        except MonitorError as err:
            if strict:
                raise
            record.update(state='unknown', error=err.msg)
        else:
            record.update(run_state=run_state, migration_status=migration,
                          state=guest_state(run_state, record['incoming'], migration))
    record['kind'] = copy_kind(record)
    return record
