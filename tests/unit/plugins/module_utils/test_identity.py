"""Process identity against real processes holding real POSIX locks."""
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _identity
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ProcessError
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout

# Holds a lockf() on the pidfile like QEMU does, then sleeps.
HOLDER = (
    'import fcntl, os, sys, time\n'
    'fd = os.open(sys.argv[sys.argv.index("-pidfile") + 1], os.O_RDWR | os.O_CREAT, 0o600)\n'
    'fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n'
    'os.ftruncate(fd, 0); os.write(fd, b"%d\\n" % os.getpid())\n'
    'print("locked", flush=True)\n'
    'time.sleep(60)\n'
)


@pytest.fixture
def layout(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'))
    layout.ensure()
    return layout


@pytest.fixture
def fake_qemu(tmp_path):
    """Start a process whose argv[0] looks like QEMU and that locks a pidfile."""
    started = []
    link = tmp_path / 'qemu-system-x86_64'
    link.symlink_to(sys.executable)

    def start(pidfile, name, program=None):
        proc = subprocess.Popen([str(program or link), '-c', HOLDER, '-pidfile', pidfile, '-name', name],
                                stdout=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout.readline().strip() == b'locked'
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_nothing_runs_without_a_pidfile(layout):
    assert _identity.find_pid(layout.paths('web'), 'web') is None


def test_the_lock_holder_is_found(layout, fake_qemu):
    paths = layout.paths('web')
    proc = fake_qemu(paths.pidfile, 'web')
    assert _identity.lock_holder(paths.pidfile) == proc.pid
    assert _identity.find_pid(paths, 'web') == proc.pid
    assert _identity.read_pidfile(paths.pidfile) == proc.pid


def test_a_stale_pidfile_naming_a_live_unrelated_pid_is_not_believed(layout):
    paths = layout.paths('web')
    bystander = subprocess.Popen(['sleep', '30'])
    try:
        with open(paths.pidfile, 'w') as handle:
            handle.write('%d\n' % bystander.pid)
        assert _identity.find_pid(paths, 'web') is None
        assert _identity.signal_instance(paths, 'web', bystander.pid, signal.SIGKILL) is False
        time.sleep(0.1)
        assert bystander.poll() is None, 'the unrelated process was signalled'
    finally:
        bystander.kill()
        bystander.wait()


def test_a_lock_holder_that_is_not_our_instance_is_refused(layout, fake_qemu):
    paths = layout.paths('web')
    fake_qemu(paths.pidfile, 'db')
    with pytest.raises(ProcessError, match='not this instance'):
        _identity.find_pid(paths, 'web')


def test_a_lock_holder_that_is_not_qemu_is_refused(layout, fake_qemu):
    paths = layout.paths('web')
    fake_qemu(paths.pidfile, 'web', program=sys.executable)
    with pytest.raises(ProcessError):
        _identity.find_pid(paths, 'web')


def test_signal_reaches_only_the_identified_process(layout, fake_qemu):
    paths = layout.paths('web')
    proc = fake_qemu(paths.pidfile, 'web')
    assert _identity.signal_instance(paths, 'web', proc.pid + 100000, signal.SIGKILL) is False
    assert proc.poll() is None
    assert _identity.signal_instance(paths, 'web', proc.pid, signal.SIGKILL) is True
    assert proc.wait(timeout=5) == -signal.SIGKILL
    # The lock went with the process: it no longer counts as running.
    assert _identity.find_pid(paths, 'web') is None


@pytest.mark.parametrize('argv, ok', [
    (['/usr/bin/qemu-system-x86_64', '-name', 'web', '-pidfile', '/r/pid/web.pid'], True),
    (['/usr/bin/kvm', '-pidfile', '/r/pid/web.pid', '-name', 'web,debug-threads=on'], True),
    (['/usr/bin/qemu-system-x86_64', '-name', 'web2', '-pidfile', '/r/pid/web.pid'], False),
    (['/usr/bin/qemu-system-x86_64', '-name', 'web', '-pidfile', '/r/pid/other.pid'], False),
    (['/bin/sleep', '-name', 'web', '-pidfile', '/r/pid/web.pid'], False),
    ([], False),
])
def test_cmdline_matching(argv, ok):
    assert _identity.cmdline_matches(argv, 'web', '/r/pid/web.pid') is ok


def test_process_state_and_start_time_of_self():
    assert _identity.process_state(os.getpid()) in ('R', 'S')
    assert _identity.start_time(os.getpid()) > 0
    assert _identity.read_cmdline(2 ** 22 + 12345) is None


def test_an_exiting_lock_holder_without_cmdline_is_waited_for(monkeypatch, tmp_path):
    """Between giving back its memory and its files an exiting QEMU still holds
    the pidfile lock but has no cmdline: it is not a stranger, it is leaving."""
    paths = NodeLayout(str(tmp_path)).paths('web')
    holders = iter([4242, 4242, 4242, None])
    cmdlines = iter([[], [], []])
    monkeypatch.setattr(_identity, 'lock_holder', lambda pidfile: next(holders))
    monkeypatch.setattr(_identity, 'read_cmdline', lambda pid: next(cmdlines))
    assert _identity.find_pid(paths, 'web') is None


def test_a_lock_holder_that_never_shows_a_cmdline_is_refused(monkeypatch, tmp_path):
    paths = NodeLayout(str(tmp_path)).paths('web')
    monkeypatch.setattr(_identity, 'EXITING_WAIT', 0.05)
    monkeypatch.setattr(_identity, 'lock_holder', lambda pidfile: 4242)
    monkeypatch.setattr(_identity, 'read_cmdline', lambda pid: [])
    with pytest.raises(ProcessError, match='refusing to touch it'):
        _identity.find_pid(paths, 'web')
