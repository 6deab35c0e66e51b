"""Looking at real QEMU processes and serial sockets from tests."""
import os
import signal
import socket
import threading
import time


def qemu_processes_under(run_dir):
    """[(pid, argv)] of live QEMU processes whose pidfile lies under run_dir."""
    found = []
    prefix = os.path.join(run_dir, 'pid') + os.sep
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = [w.decode() for w in handle.read().split(b'\0')[:-1]]
            with open('/proc/%s/stat' % entry) as handle:
                if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    continue
        except OSError:
            continue
        if argv and 'qemu-system' in os.path.basename(argv[0]) and '-pidfile' in argv:
            pidfile = argv[argv.index('-pidfile') + 1]
            if pidfile.startswith(prefix):
                found.append((int(entry), argv))
    return sorted(found)


def kill_qemu_under(run_dir):
    """Kill every QEMU under run_dir (stopped ones are continued first)."""
    for pid, _argv in qemu_processes_under(run_dir):
        for signum in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    wait_until(lambda: not qemu_processes_under(run_dir), 10)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('condition not met within %s s' % timeout)
        time.sleep(interval)


def serial_lines(path, count, timeout=30.0):
    """Read ``count`` complete lines from a serial unix socket (output before
    the connection is not kept by QEMU, so the first partial line is dropped)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    data = b''
    deadline = time.monotonic() + timeout
    try:
        while data.count(b'\n') < count + 1 and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    lines = data.decode('ascii', 'replace').replace('\r', '').split('\n')
    return [line for line in lines[1:-1] if line][:count]


def pid_alive(pid):
    """Whether pid is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


# The test guest prints one "tick N" line per BIOS timer tick.
TICKS_PER_SECOND = 18.2


def ticks(path, count=4):
    """A few consecutive tick numbers from a serial console socket."""
    lines = serial_lines(path, count=count + 2)
    numbers = [int(line.split()[1]) for line in lines if line.startswith('tick ')]
    assert len(numbers) >= count, lines
    assert all(b == a + 1 for a, b in zip(numbers, numbers[1:])), lines
    return numbers


def assert_ticks_continue(before, path, within_s):
    """The tick counter goes on from where it was: the same guest, not a new boot."""
    after = ticks(path)
    assert before[-1] < after[0] <= before[-1] + within_s * TICKS_PER_SECOND, (before, after)
    return after


class SerialRecorder:
    """Everything a guest prints on its serial console, from its first byte:
    a thread connects as soon as the socket appears (QEMU drops what it prints
    while no client is connected) and keeps reading until ``stop``. Start it
    before the guest starts; ``wait_for(text)`` returns the lines so far once
    one contains text."""

    def __init__(self, path, appear_within=60.0):
        self.path = path
        self.data = b''
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._appear_within = appear_within
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        deadline = time.monotonic() + self._appear_within
        sock = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
                break
            except OSError:
                sock.close()
                sock = None
                time.sleep(0.005)
        if sock is None:
            return
        self.connected.set()
        sock.settimeout(0.2)
        with sock:
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self.data += chunk

    def lines(self):
        with self._lock:
            text = self.data.decode('utf-8', 'replace')
        return [line for line in text.replace('\r', '').split('\n') if line]

    def wait_for(self, text, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if any(text in line for line in lines):
                return lines
            time.sleep(0.05)
        raise AssertionError('%r not on the serial console of %s within %s s; it printed:\n%s'
                             % (text, self.path, timeout, '\n'.join(self.lines()[-40:])))

    def stop(self):
        self._stop.set()
        self._thread.join(5)
