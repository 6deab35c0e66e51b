# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run at a time per instance: an flock on run_dir/lock/NAME.lock.

Two plays (or two forks of one) acting on the same instance are serialised,
never interleaved. The kernel drops the lock if the holder dies.
"""

import contextlib
import fcntl
import os
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import LockError

POLL_INTERVAL = 0.05
# Seconds a run waits for another on the same instance (the modules' lock_timeout default).
DEFAULT_TIMEOUT = 60


@contextlib.contextmanager
def instance_lock(paths, name, timeout=DEFAULT_TIMEOUT):
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError('another run has held %s for more than %.0f s' % (paths.lock, timeout),
                                    instance=name)
                time.sleep(POLL_INTERVAL)
        yield
    finally:
        os.close(fd)
