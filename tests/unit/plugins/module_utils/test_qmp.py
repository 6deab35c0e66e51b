"""QmpSession against a fake QMP server on a unix socket; socat is the real one."""
import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from ansible_collections.hvops.kvm.plugins.module_utils import _qmp
from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MissingBinaryError, MonitorError, MonitorTimeout)
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import (
    QmpSession, find_socat, qmp_command)

GREETING = {'QMP': {'version': {'qemu': {'micro': 22, 'minor': 2, 'major': 7},
                                'package': 'fake'}, 'capabilities': ['oob']}}

pytestmark = pytest.mark.skipif(not shutil.which('socat'), reason='socat is not installed')


def event(name, **data):
    return {'event': name, 'data': data, 'timestamp': {'seconds': int(time.time()), 'microseconds': 0}}


class FakeQmp:
    """Serves one client at a time like QEMU; commands are scripted below."""

    def __init__(self, path):
        self.requests = []
        # Sent before the greeting (a continued QEMU's leftovers for an earlier client).
        self.early = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(0.05)
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                conn, _addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                try:
                    self.serve(conn)
                except OSError:
                    pass

    def serve(self, conn):
        def send(message):
            conn.sendall(message if isinstance(message, bytes) else json.dumps(message).encode() + b'\r\n')

        for message in self.early:
            send(message)
        send(GREETING)
        for line in conn.makefile('rb'):
            request = json.loads(line)
            self.requests.append(request)
            command, args = request['execute'], request.get('arguments', {})

            def reply(value):
                send({'return': value, 'id': request['id']})

            if command == 'emit':
                for number, name in enumerate(args.get('before', [])):
                    send(event(name, n=number))
                reply({})
                for name in args.get('after', []):
                    send(event(name))
            elif command == 'echo':
                reply(args)
            elif command == 'fail':
                send({'error': {'class': 'GenericError', 'desc': 'it broke'}, 'id': request['id']})
            elif command == 'slow':
                time.sleep(args['delay'])
                reply({'slow': True})
            elif command == 'garbage':
                send(b'{"return": oops}\r\n')
            elif command == 'die':
                return
            elif command == 'human-monitor-command':
                reply('VM status: running\r\n' if args['command-line'] == 'info status' else '')
            elif command != 'hang':
                reply({})

    def stop(self):
        self.stopping = True
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def sock_dir():
    path = tempfile.mkdtemp(prefix='qmp', dir='/tmp')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(sock_dir):
    fake = FakeQmp(os.path.join(sock_dir, 'q.sock'))
    fake.path = os.path.join(sock_dir, 'q.sock')
    yield fake
    fake.stop()


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
            found.append((int(entry), rest[0]))
    return found


@pytest.fixture(autouse=True)
def no_socat_left():
    yield
    assert socat_children() == []


def assert_reaped(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists('/proc/%d' % pid)


def test_open_reads_greeting_and_negotiates(server):
    with QmpSession(server.path, instance='web') as session:
        assert session.version == (7, 2, 22)
        assert session.greeting['capabilities'] == ['oob']
        assert isinstance(session.pid, int)
        assert server.requests[0]['execute'] == 'qmp_capabilities'


def test_events_before_the_greeting_were_for_an_earlier_client_and_are_dropped(server):
    server.early = [event('MIGRATION', status='failed'), event('RESUME')]
    with QmpSession(server.path) as session:
        assert session.version == (7, 2, 22) and session.events == []
        assert session.execute('echo', {'a': 1}) == {'a': 1}
    server.early = [event('MIGRATION', n=number) for number in range(65)]
    with pytest.raises(MonitorError, match='instead of a greeting'):
        QmpSession(server.path).open()
    server.early = [{'return': {}}]
    with pytest.raises(MonitorError, match='instead of a greeting'):
        QmpSession(server.path).open()


def test_execute_returns_the_return_value_with_unique_ids(server):
    with QmpSession(server.path) as session:
        assert session.execute('echo', {'a': 1}) == {'a': 1}
        assert session.execute('echo', {'b': [2]}) == {'b': [2]}
        assert session.execute('nothing') == {}
    ids = [request['id'] for request in server.requests]
    assert len(set(ids)) == len(ids) == 4


def test_error_reply_surfaces_class_and_desc(server):
    with QmpSession(server.path, instance='web') as session:
        with pytest.raises(MonitorError) as caught:
            session.execute('fail')
        assert session.execute('echo', {'still': 'usable'}) == {'still': 'usable'}
    err = caught.value
    assert not isinstance(err, MonitorTimeout)
    assert (err.error_class, err.desc) == ('GenericError', 'it broke')
    assert err.details['qmp_socket'] == server.path
    assert str(err) == 'instance web: QMP command fail failed on %s: GenericError: it broke' % server.path


def test_events_between_replies_are_kept_in_order(server):
    with QmpSession(server.path) as session:
        assert session.execute('emit', {'before': ['A', 'B', 'X', 'X']}) == {}
        assert [e['event'] for e in session.events] == ['A', 'B', 'X', 'X']
        assert all('timestamp' in e for e in session.events)
        assert session.execute('emit', {'after': ['C', 'D']}) == {}
        assert session.wait_event('D', 2)['event'] == 'D'          # arriving; C is kept
        assert session.wait_event(['B', 'Z'], 0)['event'] == 'B'   # from the buffer
        assert session.wait_event('X', 0, predicate=lambda e: e['data']['n'] == 3)['data'] == {'n': 3}
        assert [e['event'] for e in session.drain_events()] == ['A', 'X', 'C']
        assert session.events == [] and session.drain_events() == []


def test_drain_events_picks_up_events_already_in_the_pipe(server):
    with QmpSession(server.path) as session:
        session.execute('emit', {'after': ['LATE']})
        session.execute('slow', {'delay': 0.05})   # LATE is read while waiting for this
        assert [e['event'] for e in session.drain_events()] == ['LATE']
        session.execute('emit', {'after': ['LATER']})
        deadline = time.monotonic() + 2
        events = []
        while not events and time.monotonic() < deadline:
            events = session.drain_events()
        assert [e['event'] for e in events] == ['LATER']


def test_wait_event_times_out(server):
    with QmpSession(server.path, instance='web') as session:
        session.execute('emit', {'before': ['A']})
        started = time.monotonic()
        with pytest.raises(MonitorTimeout) as caught:
            session.wait_event('NOPE', 0.3)
        assert 0.25 < time.monotonic() - started < 2
        assert [e['event'] for e in session.events] == ['A']
    assert 'no NOPE event from QMP socket %s within 0.3s' % server.path in str(caught.value)


def test_reply_timeout_then_late_reply_is_not_taken_for_the_next(server):
    with QmpSession(server.path, instance='web') as session:
        started = time.monotonic()
        with pytest.raises(MonitorTimeout) as caught:
            session.execute('slow', {'delay': 1.0}, timeout=0.2)
        assert 0.15 < time.monotonic() - started < 0.9
        assert session.execute('echo', {'n': 1}) == {'n': 1}
    assert 'QMP command slow got no reply from %s within 0.2s' % server.path in str(caught.value)


def test_hanging_command_times_out_and_close_still_works(server):
    session = QmpSession(server.path, timeout=0.3).open()
    pid = session.pid
    with pytest.raises(MonitorTimeout):
        session.execute('hang')
    session.close()
    assert_reaped(pid)


def test_monitor_closing_mid_command(server):
    session = QmpSession(server.path, instance='web').open()
    pid = session.pid
    with pytest.raises(MonitorError) as caught:
        session.execute('die')
    assert not isinstance(caught.value, MonitorTimeout)
    assert 'closed the connection while waiting for the reply to die' in str(caught.value)
    assert session.pid is None
    assert_reaped(pid)
    with pytest.raises(MonitorError, match='closed by the monitor; cannot run echo'):
        session.execute('echo')


def test_malformed_json(server):
    session = QmpSession(server.path).open()
    with pytest.raises(MonitorError, match=r'malformed QMP message from .*: \{"return": oops\}'):
        session.execute('garbage')
    assert session.pid is None


def test_no_greeting_means_busy(sock_dir):
    path = os.path.join(sock_dir, 'busy.sock')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)           # connects succeed, but nobody ever greets
    try:
        started = time.monotonic()
        with pytest.raises(MonitorTimeout) as caught:
            QmpSession(path, instance='web', timeout=0.4).open()
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()
    msg = str(caught.value)
    assert msg.startswith('instance web: no greeting from QMP socket %s within 0.4s' % path)
    assert 'monitor busy: a -qmp socket serves one client at a time' in msg


def test_missing_socket(sock_dir):
    path = os.path.join(sock_dir, 'none.sock')
    with pytest.raises(MonitorError) as caught:
        QmpSession(path, instance='web').open()
    assert str(caught.value) == 'instance web: QMP socket %s does not exist (is the instance running?)' % path


def test_refused_connection_on_a_stale_socket(sock_dir):
    path = os.path.join(sock_dir, 'stale.sock')
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()                 # the file stays, nobody listens
    started = time.monotonic()
    with pytest.raises(MonitorError) as caught:
        QmpSession(path, instance='web', timeout=5).open()
    assert time.monotonic() - started < 2
    msg = str(caught.value)
    assert not isinstance(caught.value, MonitorTimeout)
    assert 'cannot connect to QMP socket %s: connection refused' % path in msg
    assert 'socat: connect(' in msg and 'Connection refused' in msg


def test_missing_socat(server, monkeypatch):
    with pytest.raises(MissingBinaryError, match='socat binary /nonexistent/socat not found'):
        QmpSession(server.path, socat='/nonexistent/socat').open()
    assert os.path.isabs(find_socat()) and find_socat('socat') == find_socat()
    monkeypatch.setenv('PATH', '/nonexistent')
    monkeypatch.setattr(_qmp, 'SOCAT_FALLBACK_DIRS', ())
    with pytest.raises(MissingBinaryError) as caught:
        QmpSession(server.path, instance='web').open()
    assert str(caught.value) == 'instance web: socat not found; install the socat package'
    with pytest.raises(MissingBinaryError, match='^socat not found; install the socat package$'):
        find_socat()


def test_hmp_returns_clean_text(server):
    with QmpSession(server.path) as session:
        assert session.hmp('info status') == 'VM status: running'
    assert server.requests[-1]['execute'] == 'human-monitor-command'
    assert server.requests[-1]['arguments'] == {'command-line': 'info status'}


def test_close_is_idempotent_and_reaps_socat(server):
    session = QmpSession(server.path).open()
    pid = session.pid
    session.close()
    session.close()
    assert session.pid is None
    assert_reaped(pid)
    with pytest.raises(MonitorError, match='is closed; cannot run echo'):
        session.execute('echo')
    assert session.open().execute('echo', {'again': True}) == {'again': True}
    session.close()


def test_exit_closes_on_exceptions(server):
    with pytest.raises(RuntimeError):
        with QmpSession(server.path) as session:
            pid = session.pid
            raise RuntimeError('boom')
    assert_reaped(pid)


def test_one_shot_command(server):
    assert qmp_command(server.path, 'echo', {'x': 1}, timeout=2) == {'x': 1}
