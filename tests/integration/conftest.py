"""Shared fixtures and helpers for the integration tests.

* require_binary(name): the path of a needed program; skips the test without
  it, or fails it when CI=true.
* guest_image: factory fixture, guest_image(variant='normal', dirty_mib=64)
  -> absolute path of a fresh copy of the test guest's raw image (tests/guest/).
* node: a fresh simulated node (nodes.LocalNode) with its own run_dir.
* raw_qemu: factory fixture, raw_qemu(image, accel='tcg', memory=32, ...)
  -> a started RawQemu: QEMU run directly, its serial read line by line
  (RawQemu.serial, a SerialLog) and QMP spoken over a plain unix socket
  (RawQemu.qmp, a QmpClient). Every QEMU it started is killed at teardown.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

GUEST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'guest')
QEMU = 'qemu-system-x86_64'


def require_binary(name):
    """Return the path of program name; without it skip the test, or fail it under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = '%s is not installed (not found on PATH)' % name
        if os.environ.get('CI') == 'true':
            pytest.fail('CI=true and a prerequisite is missing: ' + message, pytrace=False)
        pytest.skip(message)
    return path


def require_kvm():
    """Skip (fail under CI=true) unless /dev/kvm can be opened read-write."""
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        message = '/dev/kvm is missing or not usable'
        if os.environ.get('CI') == 'true':
            pytest.fail('CI=true and a prerequisite is missing: ' + message, pytrace=False)
        pytest.skip(message)


# The user the collection's QEMU runs as by default (tools/setup.sh creates it).
QEMU_USER = 'hvops-qemu'


def qemu_user_ids():
    """(uid, gid) of QEMU_USER; a missing user fails the test (setup makes it)."""
    import pwd  # pylint: disable=import-outside-toplevel
    try:
        entry = pwd.getpwnam(QEMU_USER)
    except KeyError:
        pytest.fail('the system user %s is missing: run tools/setup.sh' % QEMU_USER, pytrace=False)
    return entry.pw_uid, entry.pw_gid


def give_to_qemu(path):
    """Make a disk image the QEMU user's (mode 0600), as an operator would:
    QEMU opens it again as that user when a migration hands it over."""
    uid, gid = qemu_user_ids()
    os.chown(path, uid, gid)
    os.chmod(path, 0o600)
    return path


def reachable_dir(prefix):
    """A new directory under /tmp that others may pass through (mode 0711),
    for what the QEMU user must reach: run_dirs and disk images."""
    path = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    os.chmod(path, 0o711)
    return path


@pytest.fixture
def guest_image():
    """guest_image(variant='normal', dirty_mib=64) -> path of a private copy of the
    test guest's image (built once, cached under build/guest/), so QEMUs of tests
    running at the same time never contend for one file's locks. The copy is the
    QEMU user's, in a directory it can reach."""
    require_binary('nasm')
    if GUEST_DIR not in sys.path:
        sys.path.insert(0, GUEST_DIR)
    from build import DEFAULT_DIRTY_MIB, build_image  # pylint: disable=import-outside-toplevel
    copies = []
    directory = reachable_dir('hk-img-')

    def make(variant='normal', dirty_mib=DEFAULT_DIRTY_MIB):
        built = build_image(variant, dirty_mib=dirty_mib)
        copy = os.path.join(directory, '%d-%s' % (len(copies), os.path.basename(built)))
        shutil.copyfile(built, copy)
        copies.append(give_to_qemu(copy))
        return copy
    yield make
    shutil.rmtree(directory, ignore_errors=True)


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
    """A minimal QMP client: execute() returns 'return' or raises on 'error'; events are kept."""

    def __init__(self, path, timeout=10.0):
        self.events = []
        self._sock = connect_unix(path, timeout)
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile('rb')
        greeting = self._message()
        if 'QMP' not in greeting:
            raise AssertionError('not a QMP greeting: %r' % greeting)
        self.execute('qmp_capabilities')

    def _message(self):
        line = self._file.readline()
        if not line:
            raise EOFError('QMP connection closed')
        return json.loads(line)

    def execute(self, command, **arguments):
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

    def close(self):
        self._file.close()
        self._sock.close()


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
        self.workdir = workdir
        self.serial_path = os.path.join(workdir, 'serial.sock')
        self.qmp_path = os.path.join(workdir, 'qmp.sock')
        self.stderr_path = os.path.join(workdir, 'qemu.stderr')
        self.argv = [require_binary(QEMU), '-S', '-display', 'none', '-nodefaults', '-no-user-config',
                     '-machine', machine, '-accel', accel, '-m', str(memory),
                     '-drive', 'file=%s,format=raw,if=%s,snapshot=on' % (image, drive_if),
                     '-serial', 'unix:%s,server=on,wait=off' % self.serial_path,
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


@pytest.fixture
def raw_qemu(tmp_path):
    """raw_qemu(image, accel='tcg', memory=32, machine='pc', drive_if='ide', extra_args=())
    -> a started RawQemu. All are killed, and their sockets removed, at teardown."""
    started = []
    dirs = []

    def boot(image, **options):
        workdir = str(tmp_path / ('q%d' % len(started)))
        if len(workdir) > 80:      # unix socket paths must stay under 108 bytes
            workdir = tempfile.mkdtemp(prefix='hq-', dir='/tmp')
            dirs.append(workdir)
        else:
            os.mkdir(workdir)
        qemu = RawQemu(workdir, image, **options)
        started.append(qemu)
        return qemu.start()

    yield boot
    for qemu in started:
        qemu.stop()
    for workdir in dirs:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def node():
    """A fresh simulated node (nodes.LocalNode): its own run_dir and a local
    inventory; every QEMU under it is killed at teardown."""
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)
    from nodes import LocalNode  # pylint: disable=import-outside-toplevel
    one = LocalNode()
    yield one
    one.destroy()


@pytest.fixture
def kvm_usable():
    """Skip (fail under CI=true) unless /dev/kvm can be used."""
    require_kvm()
    return True
