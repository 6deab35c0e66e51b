# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start a QEMU that outlives the task, without ``-daemonize``.

QEMU's own ``-daemonize`` forks after the seccomp filter is in place, so a
sandbox that denies spawning kills it. The library therefore starts QEMU in
the foreground in a session of its own (no controlling terminal, standard
input from /dev/null, output to a log file of the instance), and waits until
QEMU either greets on its QMP socket (it is up: the monitor answers only once
initialisation is over) or exits (the log says why). After the task the
process belongs to init, as a daemonized QEMU would.

On a node that systemd runs, QEMU starts in a scope of its own
(``systemd-run --scope``, which execs QEMU under the same pid, as Proxmox
starts its guests): otherwise a QEMU started over SSH would belong to the
SSH session, and systemd would terminate it with the session when the node
goes down, before the hvops-kvm-guests unit had powered it off. The scope is
ordered before that unit, so at shutdown it is stopped after it: the unit's
shutdown sees every guest still running.
"""

import hashlib
import os
import shutil
import subprocess
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, ProcessError
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import QmpSession

START_TIMEOUT = 60.0
POLL = 0.01
LOG_LIMIT = 4096
# Files QEMU creates before it drops privileges (the QMP and serial sockets)
# are group- and world-inaccessible, as with -daemonize.
QEMU_UMASK = 0o027
SYSTEMD_BOOTED = '/run/systemd/system'
GUESTS_UNIT = 'hvops-kvm-guests.service'
SLICE = 'machine.slice'


def scope_argv(argv, name, run_dir):
    """argv run in a systemd scope of its own when systemd runs this node
    (sd_booted: /run/systemd/system exists) and systemd-run is there, else argv."""
    systemd_run = shutil.which('systemd-run')
    if not os.path.isdir(SYSTEMD_BOOTED) or systemd_run is None or name is None:
        return list(argv)
    # One scope per instance and node directory (simulated nodes share a machine).
    tag = hashlib.sha256(run_dir.encode('utf-8')).hexdigest()[:8]
    return [systemd_run, '--scope', '--quiet', '--collect', '--unit=hvops-kvm-%s-%s' % (name, tag),
            '--slice=%s' % SLICE, '--description=hvops.kvm guest %s' % name,
            '--property=Before=%s' % GUESTS_UNIT, '--'] + list(argv)


def _log_tail(path):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_LIMIT))
            return handle.read().decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def launch(argv, log_path, qmp_path, instance=None, timeout=START_TIMEOUT, socat=None, run_dir=None):
    """Start argv detached; return (pid, open QmpSession) once QEMU greets.
    The caller closes the session. A QEMU that exits first raises
    ProcessError with the end of its log."""
    shown = argv
    argv = scope_argv(argv, instance, run_dir or os.path.dirname(os.path.dirname(qmp_path)))
    with open(log_path, 'wb') as log:
        os.fchmod(log.fileno(), 0o600)
        # The child inherits the umask; the task's own is restored at once.
        old_umask = os.umask(QEMU_UMASK)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                                    start_new_session=True, env=dict(os.environ, LC_ALL='C'))
        finally:
            os.umask(old_umask)
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            detail = _log_tail(log_path) or 'exit code %d' % rc
            raise ProcessError('QEMU failed to start: %s' % detail, instance=instance, rc=rc, argv=shown)
        if os.path.exists(qmp_path):
            session = QmpSession(qmp_path, instance=instance, timeout=max(0.5, deadline - time.monotonic()),
                                 socat=socat)
            try:
                session.open()
            except MonitorError:
                session.close()
                if proc.poll() is None and time.monotonic() < deadline:
                    continue
            else:
                return proc.pid, session
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            raise ProcessError('QEMU did not come up within %.0f s: %s'
                               % (timeout, _log_tail(log_path) or 'no output'), instance=instance, argv=shown)
        time.sleep(POLL)
