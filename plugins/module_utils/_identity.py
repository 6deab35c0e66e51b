# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is this instance's QEMU alive, and which process is it?

A pid alone proves nothing: after a crash the pidfile stays behind and its pid
may belong to anyone by now. QEMU holds a POSIX lock on its ``-pidfile`` for
its whole life, so the lock holder (asked with F_GETLK, which takes no lock)
is the live QEMU, and its ``/proc/PID/cmdline`` must name our pidfile and our
instance before we believe it, let alone signal it.
"""

import fcntl
import os
import signal
import struct
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ProcessError

# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (and padding).
FLOCK_FORMAT = 'hhqqi4x'
QEMU_PROGRAM_NAMES = ('kvm', 'qemu-kvm')
# How long a lock holder without a cmdline (exiting) is waited for.
EXITING_WAIT = 5.0
EXITING_POLL = 0.01


def lock_holder(pidfile):
    """The pid holding a POSIX lock on pidfile, or None (no file or no lock)."""
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(FLOCK_FORMAT, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    l_type, _whence, _start, _len, l_pid = struct.unpack(FLOCK_FORMAT, answer)
    if l_type == fcntl.F_UNLCK or l_pid <= 0:
        return None
    return l_pid


def read_pidfile(pidfile):
    try:
        with open(pidfile) as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def read_cmdline(pid):
    """argv of a process as a list, or None when it is gone."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [part.decode('utf-8', 'replace') for part in raw.split(b'\0')[:-1]]


def option_value(argv, option):
    """The value after ``option`` in argv, or None."""
    for index, word in enumerate(argv[:-1]):
        if word == option:
            return argv[index + 1]
    return None


def is_qemu_program(path):
    """Whether a program's name is one the identity check recognises as QEMU:
    a binary of another name could be started but never managed again."""
    program = os.path.basename(path or '')
    return program.startswith('qemu-system-') and len(program) > len('qemu-system-') or \
        program in QEMU_PROGRAM_NAMES


def cmdline_matches(argv, name, pidfile):
    """Whether argv is a QEMU started for this instance with this pidfile."""
    if not argv or not is_qemu_program(argv[0]):
        return False
    return option_value(argv, '-pidfile') == pidfile and \
        (option_value(argv, '-name') or '').split(',')[0] == name


def find_pid(paths, name):
    """The pid of this instance's live QEMU, or None when it does not run.

    A process that holds the lock but does not look like ours raises
    ProcessError: something is badly wrong and nothing should be touched.
    """
    pid = lock_holder(paths.pidfile)
    if pid is None:
        return None
    argv = read_cmdline(pid)
    deadline = time.monotonic() + EXITING_WAIT
    while argv == [] and time.monotonic() < deadline:
        # A process that is exiting has given back its memory (so no cmdline)
        # before its files (so still the lock): wait for it to let go.
        time.sleep(EXITING_POLL)
        pid = lock_holder(paths.pidfile)
        if pid is None:
            return None
        argv = read_cmdline(pid)
    if argv is None:
        # Exited between the two looks.
        return None
    if not cmdline_matches(argv, name, paths.pidfile):
        raise ProcessError('pid %d holds the lock on %s but is not this instance\'s QEMU (%s);'
                           ' refusing to touch it' % (pid, paths.pidfile, ' '.join(argv[:3])),
                           instance=name)
    return pid


def process_state(pid):
    """The one-letter state from /proc/PID/stat (R, S, T, Z, ...), or None."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(')', 1)[1].split()[0]


def process_status(pid):
    """{'uid': effective uid, 'seccomp': seccomp mode} of a process from
    /proc/PID/status, or None when it is gone."""
    try:
        with open('/proc/%d/status' % pid) as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    found = {'uid': None, 'seccomp': None}
    for line in text.splitlines():
        key, _sep, value = line.partition(':')
        words = value.split()
        if key == 'Uid' and len(words) >= 2:
            found['uid'] = int(words[1])
        elif key == 'Seccomp' and words:
            found['seccomp'] = int(words[0])
    return found


def start_time(pid):
    """Seconds since boot at which pid started, or None."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[19]) / float(os.sysconf('SC_CLK_TCK'))


def signal_instance(paths, name, pid, signum=signal.SIGKILL):
    """Send a signal to pid only if it still is this instance's QEMU.

    Where the platform has pidfds the process is pinned before the identity
    check, so the pid cannot be reused between the check and the signal.
    """
    pidfd = None
    if hasattr(os, 'pidfd_open'):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
    try:
        if find_pid(paths, name) != pid:
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True
