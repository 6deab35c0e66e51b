# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The source's side of a migration under way: start it, wait for its end on
MIGRATION events with query-migrate samples between them (stall and overall
timeout detection, the fallback for a missed event), cancel, and read the
settled statistics. One open QMP session on the source's QEMU throughout."""

import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MigrationError, MonitorError, MonitorTimeout
from ansible_collections.hvops.kvm.plugins.module_utils._identity import process_state
from ansible_collections.hvops.kvm.plugins.module_utils._migration_stats import (
    Progress, ends_migration, extract_stats, stats_settled)
from ansible_collections.hvops.kvm.plugins.module_utils._states import MIGRATION_ENDED, POSTCOPY

# Seconds between query-migrate samples while waiting on events (stall
# detection and the fallback for a missed event).
POLL_INTERVAL = 0.25
CANCEL_WAIT = 10.0
RESUME_WAIT = 5.0
# Right after "completed", query-migrate may still show total-time 0.
STATS_SETTLE = 1.0
STATS_RETRY = 0.01


def ends_or_waits(event):
    """Whether a MIGRATION event reports a final status or the wait before the switch-over."""
    return ends_migration(event) or (event.get('data') or {}).get('status') == 'pre-switchover'


def resume(qmp, name):
    """cont, then wait until QEMU says the guest runs."""
    qmp.execute('cont')
    deadline = time.monotonic() + RESUME_WAIT
    while True:
        run_state = qmp.execute('query-status')['status']
        if run_state == 'running':
            return
        if time.monotonic() >= deadline:
            raise MigrationError('the guest did not run within %.0f s of cont (run state %s)'
                                 % (RESUME_WAIT, run_state), instance=name)
        time.sleep(0.02)


class Outgoing:
    """The outgoing migration of instance ``name`` on the open session ``qmp``;
    ``params`` the migrate phase's options (timeout, stall_timeout, postcopy);
    ``pid`` the source QEMU's, to tell a stopped process from a busy monitor;
    ``switchover`` what to do when QEMU waits before the switch-over
    (pause-before-switchover: the guest is stopped and the device state not
    yet sent), before it is told to go on; a MigrationError from it cancels
    the migration."""

    def __init__(self, qmp, name, params, pid=None, switchover=None):
        self.qmp = qmp
        self.name = name
        self.params = params
        self.pid = pid
        self.switchover = switchover
        self.switchover_error = None
        self.continued = False
        self.last_sample = {}

    def send(self, uri, pause, result):
        """migrate, wait for its end (cancelling a stalled or overdue one), and
        put its status, statistics and timing in result; MigrationError if it
        did not complete."""
        started = time.monotonic()
        try:
            self.qmp.execute('migrate', {'uri': uri})
        except MonitorError as err:
            self.after_failure(pause)
            raise MigrationError('migrate to %s was refused: %s' % (uri, err.desc or err.msg),
                                 instance=self.name, status='failed')
        try:
            outcome, event, seen_at = self.wait(started)
        except MonitorTimeout as err:
            raise MigrationError(self.silence(err), instance=self.name, status='unknown')
        if outcome in ('stalled', 'timeout', 'switchover'):
            status = self.cancel()
        else:
            status = outcome
        info = self.settled_info()
        if 'ram' not in info:
            # A failed or cancelled migration reports no figures: the last sample's.
            info = dict(self.last_sample, **info)
        stats = extract_stats(info)
        if status != 'completed':
            source_state = self.after_failure(pause)
            why = {
                'stalled': 'no progress for %d s (transferred bytes stayed at %s)'
                           % (self.params['stall_timeout'], stats['transferred_bytes']),
                'timeout': 'not done within the timeout of %d s' % self.params['timeout'],
                'switchover': 'before the switch-over, %s' % (self.switchover_error and self.switchover_error.msg),
            }.get(outcome, 'QEMU reports it %s%s' % (status, ': %s' % stats['error'] if stats['error'] else ''))
            raise MigrationError('migration to %s did not complete: %s; QEMU ended it as %s and the'
                                 ' guest is %s on the source' % (uri, why, status, source_state),
                                 instance=self.name, status=status, reason=outcome, stats=stats,
                                 source_run_state=source_state)
        result.update(status=status, stats=stats, timing=self.timing(event, started, seen_at))

    def silence(self, err):
        """Why the source's monitor stopped answering, as far as this node can tell."""
        state = process_state(self.pid) if self.pid else None
        if state in ('T', 't'):
            return ('the source QEMU (pid %d) stopped answering during the migration (%s): it is stopped'
                    ' (process state %s: SIGSTOP, a freezer or a debugger), so it neither sends the guest nor'
                    ' answers until it is continued' % (self.pid, err.msg, state))
        return ('the source\'s monitor stopped answering during the migration (%s); QEMU holds it while it'
                ' sends the final state, so the target has probably stopped reading: the guest stays paused'
                ' on the source until the connection breaks (kill the target QEMU)' % err.msg)

    def wait(self, started):
        """(outcome, event, seen_at): outcome is a terminal status, 'stalled'
        or 'timeout'; event the terminal MIGRATION event when one was seen;
        seen_at the wall-clock time the outcome was seen."""
        progress = Progress(started, self.params['timeout'], self.params['stall_timeout'])
        switched = False
        while True:
            info = self.qmp.execute('query-migrate') or {}
            status = info.get('status')
            if status in MIGRATION_ENDED:
                return status, self.find_event(status), time.time()
            if status == 'pre-switchover' and not self.continued:
                if not self.switch_over():
                    return 'switchover', None, time.time()
                continue
            self.last_sample = info
            ram = info.get('ram') or {}
            verdict = progress.sample(time.monotonic(), ram.get('transferred', 0))
            if verdict:
                return verdict, None, time.time()
            if self.params['postcopy'] and not switched and status == 'active' and \
                    ram.get('dirty-sync-count', 0) >= 2:
                self.qmp.execute('migrate-start-postcopy')
                switched = True
            try:
                event = self.qmp.wait_event('MIGRATION', timeout=POLL_INTERVAL, predicate=ends_or_waits)
            except MonitorTimeout:
                continue
            if event['data']['status'] == 'pre-switchover':
                continue
            return event['data']['status'], event, time.time()

    def switch_over(self):
        """Run the switchover step, then let QEMU go on; False when the step
        failed (its error in switchover_error)."""
        try:
            if self.switchover is not None:
                self.switchover()
        except MigrationError as err:
            self.switchover_error = err
            return False
        self.qmp.execute('migrate-continue', {'state': 'pre-switchover'})
        self.continued = True
        return True

    def find_event(self, status):
        for event in reversed(self.qmp.drain_events()):
            if event.get('event') == 'MIGRATION' and (event.get('data') or {}).get('status') == status:
                return event
        return None

    def cancel(self):
        status = (self.qmp.execute('query-migrate') or {}).get('status')
        if status in POSTCOPY:
            raise MigrationError('the migration is in postcopy (%s) and cannot be cancelled: the guest\'s'
                                 ' memory is split between the nodes; leave both QEMUs alone and see the'
                                 ' QEMU documentation on migrate-recover' % status, instance=self.name,
                                 status=status)
        if status in MIGRATION_ENDED:
            return status
        self.qmp.execute('migrate_cancel')
        try:
            event = self.qmp.wait_event('MIGRATION', timeout=CANCEL_WAIT, predicate=ends_migration)
            return event['data']['status']
        except MonitorTimeout:
            status = (self.qmp.execute('query-migrate') or {}).get('status')
            if status in MIGRATION_ENDED:
                return status
            raise MigrationError('migrate_cancel did not end the migration within %.0f s (status %s)'
                                 % (CANCEL_WAIT, status), instance=self.name, status=status)

    def settled_info(self):
        deadline = time.monotonic() + STATS_SETTLE
        while True:
            info = self.qmp.execute('query-migrate') or {}
            if stats_settled(info) or time.monotonic() >= deadline:
                return info
            time.sleep(STATS_RETRY)

    def after_failure(self, paused_by_us):
        """Resume a source this run paused (QEMU resumes one it paused itself);
        the source's run state afterwards."""
        if paused_by_us:
            resume(self.qmp, self.name)
        return self.qmp.execute('query-status')['status']

    @staticmethod
    def timing(event, started, seen_at):
        """How long the phase waited, and how soon after QEMU's completion
        event (its own timestamp) the run saw it and had its statistics."""
        now = time.time()
        timing = {'wait_s': round(time.monotonic() - started, 3), 'completed_at': None,
                  'completion_seen_after_ms': None, 'returned_after_ms': None}
        if event and event.get('timestamp'):
            stamp = event['timestamp']['seconds'] + event['timestamp']['microseconds'] / 1e6
            timing.update(completed_at=stamp,
                          completion_seen_after_ms=round((seen_at - stamp) * 1000, 1),
                          returned_after_ms=round((now - stamp) * 1000, 1))
        return timing
