# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A QMP monitor client that speaks to QEMU's ``-qmp`` unix socket through socat.

One QmpSession runs one ``socat`` child connected to the socket and exchanges
QMP's JSON lines over its stdin and stdout pipes. Replies are matched to
commands by ``id``; asynchronous events are kept, in order, in
``session.events`` until someone waits for or drains them.

How socat is run, and why:

* ``-t 0``: on EOF in one direction socat stops at once. By default it lingers
  0.5 s for the other direction, which delays noticing that QEMU closed the
  monitor (after ``quit``) and closing a session that never got its greeting.
  The only EOFs in a session are ours (close) and QEMU's (gone), and neither
  leaves data worth waiting for: what QEMU sent before its EOF is already in
  our pipe.
* No ``-T``: an inactivity timeout would end an idle session under our feet.
* socat copies whatever it reads right away (no line buffering) and its stderr
  is kept, so a failed connect is reported in socat's own words.

A ``-qmp`` socket serves one client at a time. A second client's connect
succeeds, but QEMU sends it no greeting until the first client leaves; a
missing greeting is therefore reported as a busy monitor.

Events can come before the greeting. Seen on QEMU 7.2: a QEMU continued
after SIGSTOP, a client having given up on it meanwhile, accepted the next
connection and sent it the MIGRATION event of the migration that had just
failed, then the greeting (the monitor still counted the old client's
negotiation). Such events were meant for an earlier client and are dropped;
at most MAX_EARLY_EVENTS of them, then the answer is not QMP.
"""

import collections
import json
import os
import re
import select
import shutil
import subprocess
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MissingBinaryError, MonitorError, MonitorTimeout)

SOCAT_FALLBACK_DIRS = ('/usr/local/bin', '/usr/bin', '/bin')
READ_SIZE = 65536
CLOSE_GRACE = 1.0
# Seconds a session waits for QEMU (the modules' monitor_timeout default).
DEFAULT_TIMEOUT = 10.0
# What QEMU says when a port it is to listen on is taken.
BUSY_PORT = 'Address already in use'
STDERR_LIMIT = 4096
# Events before the greeting (see above) that are skipped at the most.
MAX_EARLY_EVENTS = 64
SOCAT_LOG_PREFIX = re.compile(r'^.*?socat\[\d+\] [A-Z] ', re.MULTILINE)
BUSY_HINT = ('monitor busy: a -qmp socket serves one client at a time; '
             'another client may be connected')


def find_socat(path=None):
    """Absolute path of the socat binary (``path`` if given, else from PATH)."""
    if path:
        found = path if os.path.isabs(path) else shutil.which(path)
        if not found or not os.access(found, os.X_OK):
            raise MissingBinaryError('socat binary %s not found or not executable; '
                                     'install the socat package' % path)
        return found
    search = os.pathsep.join([os.environ.get('PATH', os.defpath)] + list(SOCAT_FALLBACK_DIRS))
    found = shutil.which('socat', path=search)
    if not found:
        raise MissingBinaryError('socat not found; install the socat package')
    return os.path.abspath(found)


def connect_socat(socat, socket_path, stderr=subprocess.PIPE):
    """A socat child whose stdin and stdout are the unix socket at socket_path."""
    return subprocess.Popen(
        [socat, '-t', '0', '-', 'UNIX-CONNECT:%s' % socket_path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        bufsize=0, close_fds=True, env=dict(os.environ, LC_ALL='C'))


def reap_socat(proc):
    """End a socat child: close its stdin, then terminate, kill and reap it.
    Returns what is left on its stderr pipe (b'' without one)."""
    left = b''
    try:
        for stage in (proc.stdin.close, proc.terminate, proc.kill):
            try:
                stage()
                proc.wait(timeout=CLOSE_GRACE)
                break
            except (OSError, subprocess.TimeoutExpired):
                pass
        else:
            proc.wait()
        if proc.stderr is not None:
            left = proc.stderr.read()
    except BaseException:  # interrupted: still leave no socat behind
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    return left


class QmpSession:
    """A QMP session over socat; use as a context manager or open()/close()."""

    def __init__(self, socket_path, instance=None, timeout=DEFAULT_TIMEOUT, socat=None):
        self.socket_path = socket_path
        self.instance = instance
        self.timeout = timeout
        self.socat = socat
        self.greeting = None
        self.version = None
        self.events = []
        self._proc = None
        self._poll = None
        self._lines = collections.deque()
        self._partial = []
        self._stderr = b''
        self._eof = False
        self._closed_why = 'not open'
        self._next_id = 0

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()
        return False

    @property
    def pid(self):
        """Process id of the socat child, None when the session is closed."""
        return self._proc.pid if self._proc else None

    # -- opening and closing ----------------------------------------------
    def open(self):
        """Connect, read the greeting and leave capabilities negotiation."""
        if self._proc:
            return self
        try:
            socat = find_socat(self.socat)
        except MissingBinaryError as err:
            raise MissingBinaryError(err.msg, instance=self.instance) from None
        self.greeting = self.version = None
        self._lines.clear()
        self._partial, self._stderr, self._eof = [], b'', False
        if not os.path.exists(self.socket_path):
            raise self._error(MonitorError, 'QMP socket %s does not exist (is the instance running?)'
                              % self.socket_path)
        self._proc = connect_socat(socat, self.socket_path)
        self._poll = select.poll()
        self._poll.register(self._proc.stdout.fileno(), select.POLLIN)
        self._poll.register(self._proc.stderr.fileno(), select.POLLIN)
        self._closed_why = None
        try:
            deadline = time.monotonic() + self.timeout
            greeting = self._next_message(deadline, 'its greeting')
            early = 0
            while isinstance(greeting, dict) and 'event' in greeting and 'QMP' not in greeting \
                    and early < MAX_EARLY_EVENTS:
                early += 1
                greeting = self._next_message(deadline, 'its greeting')
            if greeting is None:
                raise self._error(MonitorTimeout, 'no greeting from QMP socket %s within %gs: %s'
                                  % (self.socket_path, self.timeout, BUSY_HINT))
            if 'QMP' not in greeting:
                raise self._error(MonitorError, 'QMP socket %s sent %s instead of a greeting'
                                  % (self.socket_path, _excerpt(json.dumps(greeting))))
            self.greeting = greeting['QMP']
            qemu = self.greeting.get('version', {}).get('qemu', {})
            self.version = tuple(qemu.get(part, 0) for part in ('major', 'minor', 'micro'))
            self.execute('qmp_capabilities')
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """End the session: close socat's stdin, then terminate, kill and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closed_why = self._closed_why or 'closed'
        self._stderr = (self._stderr + reap_socat(proc))[-STDERR_LIMIT:]

    # -- commands and events ----------------------------------------------
    def execute(self, command, arguments=None, timeout=None):
        """Run a QMP command; its ``return`` value, or MonitorError on an error reply."""
        self._next_id += 1
        request = {'execute': command, 'id': 'hvops-%d' % self._next_id}
        if arguments:
            request['arguments'] = arguments
        self._send(request, command)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        waiting_for = 'the reply to %s' % command
        while True:
            message = self._next_message(deadline, waiting_for)
            if message is None:
                raise self._error(MonitorTimeout, 'QMP command %s got no reply from %s within %gs'
                                  % (command, self.socket_path, timeout))
            if 'event' in message:
                self.events.append(message)
            elif message.get('id') == request['id']:
                break
            # anything else is a late reply to a command that timed out
        if 'error' in message:
            error = message['error']
            error_class, desc = error.get('class'), error.get('desc')
            raise self._error(MonitorError, 'QMP command %s failed on %s: %s: %s'
                              % (command, self.socket_path, error_class, desc),
                              error_class=error_class, desc=desc)
        return message.get('return')

    def hmp(self, command_line, timeout=None):
        """Run a human-monitor command through QMP; its output text, newline-normalised."""
        text = self.execute('human-monitor-command', {'command-line': command_line}, timeout)
        return (text or '').replace('\r\n', '\n').rstrip()

    def wait_event(self, names, timeout=None, predicate=None):
        """First event named in ``names`` (and accepted by ``predicate``), taken
        from the buffer or waited for; it is removed from ``events``."""
        names = {names} if isinstance(names, str) else set(names)

        def wanted(event):
            return event.get('event') in names and (predicate is None or predicate(event))

        for index, event in enumerate(self.events):
            if wanted(event):
                return self.events.pop(index)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        label = '/'.join(sorted(names))
        self._require_open('wait for event %s' % label)
        while True:
            message = self._next_message(deadline, 'event %s' % label)
            if message is None:
                raise self._error(MonitorTimeout, 'no %s event from QMP socket %s within %gs'
                                  % (label, self.socket_path, timeout))
            if 'event' in message:
                if wanted(message):
                    return message
                self.events.append(message)

    def drain_events(self):
        """Events received so far (buffered or already in the pipe); clears the buffer."""
        while self._proc and not self._eof and self._fill(0):
            pass
        while self._lines:
            message = self._parse(self._lines.popleft())
            if 'event' in message:
                self.events.append(message)
        events, self.events = self.events, []
        return events

    # -- the pipe ---------------------------------------------------------
    def _require_open(self, doing):
        if self._proc is None:
            raise self._error(MonitorError, 'QMP session to %s is %s; cannot %s'
                              % (self.socket_path, self._closed_why, doing))

    def _send(self, request, command):
        self._require_open('run %s' % command)
        data = (json.dumps(request) + '\n').encode()
        try:
            while data:
                data = data[os.write(self._proc.stdin.fileno(), data):]
        except OSError:
            raise self._closed_error('sending %s' % command)

    def _next_message(self, deadline, waiting_for):
        """Next parsed message; None when the deadline passes first."""
        while True:
            if self._lines:
                return self._parse(self._lines.popleft())
            if self._eof:
                raise self._closed_error('waiting for %s' % waiting_for)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._fill(remaining)

    def _fill(self, timeout):
        """Read once what socat has written, waiting up to ``timeout`` seconds
        for it; False when nothing came."""
        ready = self._poll.poll(max(0, int(timeout * 1000 + 0.999)))
        for fd, _flags in ready:
            chunk = os.read(fd, READ_SIZE)
            if fd == self._proc.stderr.fileno():
                self._stderr = (self._stderr + chunk)[-STDERR_LIMIT:]
            elif chunk:
                self._feed(chunk)
            else:
                self._eof = True
            if not chunk:
                self._poll.unregister(fd)
        return bool(ready)

    def _feed(self, chunk):
        self._partial.append(chunk)
        if b'\n' in chunk:
            pieces = b''.join(self._partial).split(b'\n')
            last = pieces.pop()
            self._partial = [last] if last else []
            self._lines.extend(piece for piece in pieces if piece.strip())

    def _parse(self, line):
        try:
            message = json.loads(line.decode('utf-8'))
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.close()
            self._closed_why = 'closed after a malformed message'
            raise self._error(MonitorError, 'malformed QMP message from %s: %s'
                              % (self.socket_path, _excerpt(line.decode('utf-8', 'replace'))))
        return message

    # -- errors -----------------------------------------------------------
    def _closed_error(self, doing):
        """The monitor went away: reap socat and explain, in socat's words if it had any."""
        was_open = self.greeting is not None
        self.close()
        said = SOCAT_LOG_PREFIX.sub('', self._stderr.decode('utf-8', 'replace')).strip()
        if 'Connection refused' in said:
            msg = ('cannot connect to QMP socket %s: connection refused; the QEMU that '
                   'made it is probably gone (stale socket)' % self.socket_path)
        elif 'No such file' in said:
            msg = 'QMP socket %s does not exist (is the instance running?)' % self.socket_path
        elif was_open:
            msg = ('QMP monitor at %s closed the connection while %s (QEMU exited?)'
                   % (self.socket_path, doing))
        else:
            msg = 'QMP monitor at %s closed the connection before its greeting' % self.socket_path
        if said:
            msg += '; socat: %s' % said.replace('\n', '; ')
        self._closed_why = 'closed by the monitor'
        return self._error(MonitorError, msg)

    def _error(self, cls, msg, **details):
        return cls(msg, instance=self.instance, qmp_socket=self.socket_path, **details)


def first_free_port(qmp, command, arguments_for, low, high):
    """(port, busy): the first port from low to high on which QEMU takes
    ``command`` with ``arguments_for(port)`` (a listening socket it binds),
    and the ports it said were in use; port is None when all of them are.
    Any other refusal raises its MonitorError."""
    busy = []
    for port in range(low, high + 1):
        try:
            qmp.execute(command, arguments_for(port))
        except MonitorError as err:
            if BUSY_PORT in (err.desc or ''):
                busy.append(port)
                continue
            raise
        return port, busy
    return None, busy


def qmp_command(socket_path, command, arguments=None, **session_args):
    """Run one QMP command in a session of its own; its return value."""
    with QmpSession(socket_path, **session_args) as session:
        return session.execute(command, arguments)


def _excerpt(text, limit=200):
    return text if len(text) <= limit else text[:limit] + '...'
