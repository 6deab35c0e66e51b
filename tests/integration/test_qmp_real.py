"""QmpSession against a real QEMU (TCG, paused at start) through the real socat."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, MonitorTimeout
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession

QEMU_ARGS = ['-accel', 'tcg', '-machine', 'pc', '-m', '32', '-display', 'none', '-nodefaults', '-S']
NAME = 'itest'


def require(binary):
    """Path of binary; missing fails the test under CI=true and skips it elsewhere."""
    path = shutil.which(binary)
    if not path:
        msg = '%s is not installed; tools/setup.sh installs it' % binary
        if os.environ.get('CI') == 'true':
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def socat_children():
    """Our socat children, zombies included."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except (OSError, ValueError):
            continue
        comm, rest = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2:].split()
        if comm == 'socat' and int(rest[1]) == os.getpid():
            found.append(int(entry))
    return found


class Qemu:
    def __init__(self, proc, qmp, log):
        self.proc, self.qmp, self.log = proc, qmp, log

    def session(self, **kw):
        return QmpSession(self.qmp, instance=NAME, **kw)


@pytest.fixture
def qemu():
    binary = require('qemu-system-x86_64')
    require('socat')
    workdir = tempfile.mkdtemp(prefix='qmpq', dir='/tmp')
    qmp, log = os.path.join(workdir, 'q.sock'), os.path.join(workdir, 'qemu.log')
    with open(log, 'wb') as output:
        proc = subprocess.Popen([binary] + QEMU_ARGS + ['-qmp', 'unix:%s,server=on,wait=off' % qmp],
                                stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(qmp):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log) as handle:
                    pytest.fail('QEMU did not create %s: %s' % (qmp, handle.read()))
            time.sleep(0.01)
        yield Qemu(proc, qmp, log)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    assert socat_children() == []


def test_status_and_version_match_the_greeting(qemu):
    with qemu.session() as qmp:
        status = qmp.execute('query-status')
        assert (status['status'], status['running']) == ('prelaunch', False)
        version = qmp.execute('query-version')['qemu']
        assert (version['major'], version['minor'], version['micro']) == qmp.version
        assert qmp.version >= (2, 0, 0)


def test_hmp_returns_clean_text(qemu):
    with qemu.session() as qmp:
        assert qmp.hmp('info status') == 'VM status: paused (prelaunch)'


def test_stop_and_resume_events(qemu):
    with qemu.session() as qmp:
        qmp.execute('cont')
        resume = qmp.wait_event('RESUME', 10)
        assert set(resume['timestamp']) == {'seconds', 'microseconds'}
        assert qmp.execute('query-status')['status'] == 'running'
        qmp.execute('stop')
        assert qmp.wait_event(['STOP', 'SHUTDOWN'], 10)['event'] == 'STOP'
        assert qmp.execute('query-status')['status'] == 'paused'
        with pytest.raises(MonitorTimeout):
            qmp.wait_event('RESUME', 0.2)


def test_many_commands_in_one_session(qemu):
    with qemu.session() as qmp:
        for _round in range(200):
            assert qmp.execute('query-status')['status'] == 'prelaunch'
        assert qmp.events == []


def test_second_session_is_busy_until_the_first_closes(qemu):
    first = qemu.session().open()
    try:
        started = time.monotonic()
        with pytest.raises(MonitorTimeout) as caught:
            qemu.session(timeout=1.0).open()
        assert time.monotonic() - started < 3
        assert 'monitor busy: a -qmp socket serves one client at a time' in str(caught.value)
        assert str(caught.value).startswith('instance %s: no greeting from QMP socket %s' % (NAME, qemu.qmp))
        assert first.execute('query-status')['status'] == 'prelaunch'
    finally:
        first.close()
    with qemu.session(timeout=10) as second:
        assert second.execute('query-status')['status'] == 'prelaunch'


def test_quit_makes_the_next_command_fail_cleanly(qemu):
    with qemu.session() as qmp:
        pid = qmp.pid
        assert qmp.execute('quit') == {}
        with pytest.raises(MonitorError) as caught:
            qmp.execute('query-status')
        assert not isinstance(caught.value, MonitorTimeout)
        assert qmp.pid is None
        assert [e['event'] for e in qmp.drain_events()] == ['SHUTDOWN']
    msg = str(caught.value)
    assert msg.startswith('instance %s: QMP monitor at %s closed the connection' % (NAME, qemu.qmp))
    assert qemu.proc.wait(10) == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
