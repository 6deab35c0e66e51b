# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU's job framework over QMP: start a job, wait for it to conclude, read
its error, dismiss it.

A job (snapshot-save, snapshot-load, snapshot-delete; block jobs started with
``auto-dismiss: false``) goes through JOB_STATUS_CHANGE events (created,
running, ..., pending, concluded) and stays ``concluded`` in ``query-jobs``,
with an ``error`` when it failed, until it is dismissed. Its start command
itself answers ``{}`` even when the job then fails: the verdict is in
``query-jobs``. QEMU 7.2 runs the snapshot jobs in its main loop, so its
monitor answers nothing else (not even the start command) until the job is
done: every command here may wait as long as the job. Events are matched by the job's id (the dismissal of an
earlier job sends a ``null`` status of its own).
"""

import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, MonitorTimeout

EVENT = 'JOB_STATUS_CHANGE'
CONCLUDED = 'concluded'
# Seconds between looks at query-jobs while waiting (events may be missed by
# a session that opened after the job started).
POLL = 0.5
# Seconds any query gets at least, even past the job's deadline.
MIN_ANSWER = 1.0


def job_info(qmp, job_id, timeout=None):
    """The job's entry in query-jobs, or None when there is no such job."""
    for job in qmp.execute('query-jobs', timeout=timeout) or []:
        if isinstance(job, dict) and job.get('id') == job_id:
            return job
    return None


def wait_job(qmp, job_id, timeout):
    """Wait until job ``job_id`` concludes; its query-jobs entry (with
    ``error`` when it failed). MonitorTimeout after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    def ours(event):
        data = event.get('data') or {}
        return data.get('id') == job_id and data.get('status') == CONCLUDED

    while True:
        # QEMU runs snapshot jobs in its main loop: the monitor may answer
        # only once the job is done, so a query may take as long as the job.
        info = job_info(qmp, job_id, timeout=max(deadline - time.monotonic(), MIN_ANSWER))
        if info is None:
            raise MonitorError('QEMU has no job %s (it was dismissed, or never started)' % job_id,
                               instance=qmp.instance)
        if info.get('status') == CONCLUDED:
            return info
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MonitorTimeout('job %s (%s) did not conclude within %gs; it is %s'
                                 % (job_id, info.get('type'), timeout, info.get('status')),
                                 instance=qmp.instance)
        try:
            qmp.wait_event(EVENT, timeout=min(POLL, remaining), predicate=ours)
        except MonitorTimeout:
            pass


def dismiss(qmp, job_id):
    """Dismiss a concluded job (job-dismiss); False when QEMU refused (it is
    not concluded, or gone)."""
    try:
        qmp.execute('job-dismiss', {'id': job_id})
    except MonitorError:
        return False
    return True


def run_job(qmp, command, arguments, timeout):
    """Run a job command to its conclusion; its query-jobs entry. The job is
    dismissed whatever happens; a job that failed raises MonitorError with
    QEMU's error (``job_error``)."""
    job_id = arguments['job-id']
    # Measured on QEMU 7.2: the reply to snapshot-save comes only once the
    # whole RAM is written (2.9 s for 736 MB of guest RAM under TCG here), so
    # the start gets the job's timeout, not the monitor's.
    started = time.monotonic()
    qmp.execute(command, arguments, timeout=timeout)
    timeout = max(timeout - (time.monotonic() - started), MIN_ANSWER)
    try:
        info = wait_job(qmp, job_id, timeout)
    finally:
        dismiss(qmp, job_id)
    if info.get('error'):
        raise MonitorError('QEMU job %s (%s) failed: %s' % (job_id, command, info['error']),
                           instance=qmp.instance, job_error=info['error'])
    return info


def new_job_id(prefix):
    """A job id unlikely to clash with another client's: prefix, pid-free, time-based."""
    return '%s-%d' % (prefix, int(time.time() * 1000))
