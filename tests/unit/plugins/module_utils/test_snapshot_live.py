"""The freeze of a disk-only snapshot: the guest is thawed whatever happens."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _snapshot_live
from ansible_collections.hvops.kvm.plugins.module_utils._agent import AgentError


class FakeAgent:
    """Records commands across sessions; ``fail`` maps a command to how many
    times it fails before it works."""
    log = []
    fail = {}
    frozen = False

    def __init__(self, socket_path, instance=None, timeout=None, socat=None):
        pass

    def open(self):
        FakeAgent.log.append('open')
        return self

    def close(self):
        FakeAgent.log.append('close')

    def execute(self, command, arguments=None, timeout=None):
        FakeAgent.log.append(command)
        if FakeAgent.fail.get(command):
            FakeAgent.fail[command] -= 1
            raise AgentError('%s failed' % command)
        if command == 'guest-fsfreeze-freeze':
            FakeAgent.frozen = True
        elif command == 'guest-fsfreeze-thaw':
            FakeAgent.frozen = False
        elif command == 'guest-fsfreeze-status':
            return 'frozen' if FakeAgent.frozen else 'thawed'
        return 1


@pytest.fixture
def agent(monkeypatch):
    FakeAgent.log, FakeAgent.fail, FakeAgent.frozen = [], {}, False
    monkeypatch.setattr(_snapshot_live, 'AgentSession', FakeAgent)
    return FakeAgent


def test_thawed_after_the_snapshot(agent):
    with _snapshot_live.frozen('/x.qga'):
        assert agent.frozen
    assert not agent.frozen
    assert agent.log == ['open', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status', 'close']


def test_thawed_when_the_snapshot_fails(agent):
    with pytest.raises(RuntimeError):
        with _snapshot_live.frozen('/x.qga'):
            raise RuntimeError('transaction failed')
    assert not agent.frozen


def test_a_failed_freeze_is_thawed_too_and_nothing_is_snapshotted(agent):
    agent.fail = {'guest-fsfreeze-freeze': 1}
    ran = []
    with pytest.raises(AgentError, match='freeze failed'):
        with _snapshot_live.frozen('/x.qga'):
            ran.append(True)
    assert ran == [] and 'guest-fsfreeze-thaw' in agent.log


def test_a_thaw_that_fails_is_tried_again_in_a_new_session(agent):
    agent.fail = {'guest-fsfreeze-thaw': 2}
    with _snapshot_live.frozen('/x.qga'):
        pass
    assert not agent.frozen and agent.log.count('open') == 3


def test_a_thaw_that_never_works_says_the_guest_may_be_frozen(agent):
    agent.fail = {'guest-fsfreeze-thaw': 99}
    with pytest.raises(AgentError, match='MAY STILL BE FROZEN'):
        with _snapshot_live.frozen('/x.qga'):
            pass
    assert agent.log.count('guest-fsfreeze-thaw') == _snapshot_live.THAW_ATTEMPTS
