"""QEMU run directly, without the collection: its serial console read line by
line (SerialLog) and QMP spoken over a plain unix socket (QmpClient), and
RawQemu, which starts qemu-system-x86_64 with both."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from tests.harness.system import require_binary

QEMU = 'qemu-system-x86_64'


class SerialLog:
    """Collects the lines (CR and LF stripped) a serial unix socket sends, on a thread."""

    def __init__(self, path, timeout=10.0):
        self.lines = []
        self.closed = False
        self._cond = threading.Condition()
        self._sock = connect_unix(path, timeout)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        pending = b''
        while True:
            try:
                chunk = self._sock.recv(4096)
            except OSError:
                chunk = b''
            with self._cond:
                if not chunk:
                    self.closed = True
                    self._cond.notify_all()
                    return
                pending += chunk
                *complete, pending = pending.split(b'\n')
                self.lines.extend(line.decode('ascii', 'replace').strip('\r') for line in complete)
                self._cond.notify_all()

    def wait_for(self, pattern, timeout=10.0, start=0):
        """(index, match) of the first line at or after index start matching regex pattern."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(start, len(self.lines)):
                    match = regex.search(self.lines[index])
                    if match:
                        return index, match
                    start = index + 1
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError('no serial line matching %r within %s s; last lines: %r'
                                         % (pattern, timeout, self.lines[-5:]))
                self._cond.wait(left)

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


class QmpClient:
    """A minimal QMP client on a plain unix socket: execute() returns 'return'
    or raises on 'error'; events that come meanwhile are kept in events."""

    def __init__(self, path, timeout=10.0):
        self.events = []
        self._sock = connect_unix(path, timeout)
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile('rb')
        greeting = self._message()
        # Events meant for an earlier client can come first (a QEMU continued
        # after SIGSTOP; plugins/module_utils/_qmp.py says more).
        for _early in range(64):
            if 'event' not in greeting or 'QMP' in greeting:
                break
            greeting = self._message()
        if 'QMP' not in greeting:
            raise AssertionError('not a QMP greeting: %r' % greeting)
        self.execute('qmp_capabilities')

    def _message(self):
        line = self._file.readline()
        if not line:
            raise EOFError('QMP connection closed')
        return json.loads(line)

    def execute(self, command, arguments=None, **more):
        """QMP command's 'return'; its arguments as a dict (QMP's names have
        dashes), as keywords, or both."""
        arguments = dict(arguments or {}, **more)
        request = {'execute': command}
        if arguments:
            request['arguments'] = arguments
        self._sock.sendall(json.dumps(request).encode() + b'\n')
        while True:
            reply = self._message()
            if 'event' in reply:
                self.events.append(reply)
            elif 'error' in reply:
                raise RuntimeError('QMP %s failed: %s' % (command, reply['error']))
            elif 'return' in reply:
                return reply['return']

    def hmp(self, command_line):
        """A human monitor command's text output."""
        return self.execute('human-monitor-command', {'command-line': command_line})

    def wait_event(self, name, predicate=lambda event: True):
        """The first event called name that predicate accepts, kept or new;
        the others read meanwhile are kept."""
        for index, event in enumerate(self.events):
            if event.get('event') == name and predicate(event):
                return self.events.pop(index)
        while True:
            message = self._message()
            if message.get('event') == name and predicate(message):
                return message
            if 'event' in message:
                self.events.append(message)

    def close(self):
        self._file.close()
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_unix(path, timeout):
    """A stream socket connected to path, retrying until the server listens."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class RawQemu:
    """qemu-system-x86_64 started paused (-S) with serial and QMP on unix sockets in
    workdir; start() connects both, then lets the guest run, so no output is lost."""

    def __init__(self, workdir, image, accel='tcg', memory=32, machine='pc', drive_if='ide', extra_args=()):
        """image: a raw disk, attached with snapshot=on; None for none (e.g. a
        kernel and initrd in extra_args)."""
        self.workdir = workdir
        self.serial_path = os.path.join(workdir, 'serial.sock')
        self.qmp_path = os.path.join(workdir, 'qmp.sock')
        self.stderr_path = os.path.join(workdir, 'qemu.stderr')
        self.argv = [require_binary(QEMU), '-S', '-display', 'none', '-nodefaults', '-no-user-config',
                     '-machine', machine, '-accel', accel, '-m', str(memory)]
        if image is not None:
            self.argv += ['-drive', 'file=%s,format=raw,if=%s,snapshot=on' % (image, drive_if)]
        self.argv += ['-serial', 'unix:%s,server=on,wait=off' % self.serial_path,
                      '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path] + list(extra_args)
        self.proc = None
        self.qmp = None
        self.serial = None
        self.started_at = None

    def start(self, timeout=15.0):
        with open(self.stderr_path, 'wb') as stderr:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.qmp_path) and os.path.exists(self.serial_path)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError('QEMU did not come up: %s\n%s' % (self.argv, self.stderr()))
            time.sleep(0.02)
        self.qmp = QmpClient(self.qmp_path)
        self.serial = SerialLog(self.serial_path)
        self.qmp.execute('query-status')   # a round trip: QEMU has accepted the serial client
        self.started_at = time.monotonic()
        self.qmp.execute('cont')
        return self

    def stderr(self):
        with open(self.stderr_path, 'rb') as handle:
            return handle.read().decode(errors='replace')

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        """QEMU's exit status, or AssertionError if it still runs after timeout seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as error:
            raise AssertionError('QEMU still running after %s s' % timeout) from error

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        for client in (self.qmp, self.serial):
            if client is not None:
                client.close()
