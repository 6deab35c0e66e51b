"""_jobs against a scripted monitor (the QMP exchange is pure logic here; the
real one is in tests/integration/test_kvm_snapshot.py)."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _jobs
from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, MonitorTimeout


class ScriptedQmp:
    """query-jobs answers from ``states`` (one per call, the last repeated);
    events as QEMU would send them."""
    instance = 'vm'

    def __init__(self, states, error=None, start_fails=False):
        self.states = list(states)
        self.error = error
        self.start_fails = start_fails
        self.calls = []
        self.timeouts = []

    def execute(self, command, arguments=None, timeout=None):
        self.calls.append(command)
        self.timeouts.append(timeout)
        if command == 'query-jobs':
            status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            if status is None:
                return []
            job = {'id': 'j1', 'type': 'snapshot-save', 'status': status}
            if status == 'concluded' and self.error:
                job['error'] = self.error
            return [{'id': 'other', 'status': 'running'}, job]
        if command == 'job-dismiss':
            if self.states[0] != 'concluded':
                raise MonitorError('not concluded')
            return {}
        if self.start_fails:
            raise MonitorError('refused', desc='bad')
        return {}

    def wait_event(self, names, timeout=None, predicate=None):
        assert predicate({'data': {'id': 'j1', 'status': 'concluded'}})
        assert not predicate({'data': {'id': 'j0', 'status': 'concluded'}})
        assert not predicate({'data': {'id': 'j1', 'status': 'null'}})
        raise MonitorTimeout('no event')


def test_a_job_that_succeeds_is_waited_for_and_dismissed():
    qmp = ScriptedQmp(['running', 'waiting', 'concluded'])
    info = _jobs.run_job(qmp, 'snapshot-save', {'job-id': 'j1'}, timeout=10)
    assert info['status'] == 'concluded'
    assert qmp.calls[0] == 'snapshot-save' and qmp.calls[-1] == 'job-dismiss'
    # The start and the queries may take as long as the job (QEMU answers once it is done).
    assert qmp.timeouts[0] == 10 and 9 < qmp.timeouts[1] <= 10


def test_a_failed_job_raises_its_error_and_is_dismissed():
    qmp = ScriptedQmp(['concluded'], error="Snapshot 'x' already exists in one or more devices")
    with pytest.raises(MonitorError, match='already exists') as caught:
        _jobs.run_job(qmp, 'snapshot-save', {'job-id': 'j1'}, timeout=10)
    assert caught.value.details['job_error'].startswith('Snapshot')
    assert qmp.calls[-1] == 'job-dismiss'


def test_a_job_that_does_not_conclude_times_out_and_dismissal_is_tried(monkeypatch):
    monkeypatch.setattr(_jobs, 'POLL', 0.01)
    qmp = ScriptedQmp(['running'])
    with pytest.raises(MonitorTimeout, match='did not conclude within'):
        _jobs.run_job(qmp, 'snapshot-load', {'job-id': 'j1'}, timeout=0.05)
    assert qmp.calls[-1] == 'job-dismiss'


def test_a_vanished_job_and_a_refused_start():
    with pytest.raises(MonitorError, match='has no job j1'):
        _jobs.wait_job(ScriptedQmp([None]), 'j1', 1)
    qmp = ScriptedQmp(['running'], start_fails=True)
    with pytest.raises(MonitorError, match='refused'):
        _jobs.run_job(qmp, 'snapshot-save', {'job-id': 'j1'}, timeout=1)
    assert qmp.calls == ['snapshot-save']
