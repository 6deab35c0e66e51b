# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The life of one instance on one node: observe, start, stop, pause, resume.

Every operation first finds the live QEMU through _identity (pidfile lock plus
cmdline), talks to it only through QMP, and signals nothing it has not
identified. Files of a dead instance are cleaned up; those of a live one never.
"""

import os
import time

from ansible_collections.hvops.kvm.plugins.module_utils import _identity, _seed
from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import build_argv
from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    KvmError, MonitorError, ProcessError, StateError)
from ansible_collections.hvops.kvm.plugins.module_utils._agent import AgentError, agent_shutdown
from ansible_collections.hvops.kvm.plugins.module_utils._files import remove_quietly
from ansible_collections.hvops.kvm.plugins.module_utils._launch import launch
from ansible_collections.hvops.kvm.plugins.module_utils._observe import observe
from ansible_collections.hvops.kvm.plugins.module_utils._policy import load_last, went_down_running
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT, QmpSession
from ansible_collections.hvops.kvm.plugins.module_utils._taps import create_taps, existing_taps, remove_taps, tap_name
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import (
    load_runtime, make_runtime, save_runtime)
from ansible_collections.hvops.kvm.plugins.module_utils._states import NEVER_RAN, RESUME_TO_POWER_OFF
from ansible_collections.hvops.kvm.plugins.module_utils._values import seconds

# Delays between presses of the ACPI power button while waiting for poweroff.
POWERDOWN_BACKOFF = (1.0, 2.0, 4.0, 8.0)
EXIT_POLL = 0.05
# Seconds a graceful stop waits for the guest (kvm_instance's shutdown_timeout default).
DEFAULT_SHUTDOWN_TIMEOUT = 30
QUIT_GRACE = 10.0
MAX_MONITOR_TIMEOUT = 3600.0
# At most this long for a guest agent to answer before stop_mode agent falls back to ACPI.
AGENT_ANSWER_WAIT = 5.0


class Instance:
    """One instance in a NodeLayout. ``run(argv) -> (rc, stdout, stderr)``;
    ``qemu_user`` (a _qemu_user.QemuUser) is who QEMU runs as, needed to start it."""

    def __init__(self, layout, name, run, monitor_timeout=DEFAULT_TIMEOUT, socat=None, qemu_user=None):
        self.layout = layout
        self.qemu_user = qemu_user
        self.name = name
        self.paths = layout.paths(name)
        self.run = run
        self.monitor_timeout = seconds(monitor_timeout, 'monitor_timeout', low=0.1, high=MAX_MONITOR_TIMEOUT)
        self.socat = socat
        # What an operation did differently from what was asked (for warnings).
        self.notes = []

    # -- observing -------------------------------------------------------
    def pid(self):
        return _identity.find_pid(self.paths, self.name)

    def monitor(self, timeout=None):
        return QmpSession(self.paths.qmp, instance=self.name,
                          timeout=timeout or self.monitor_timeout, socat=self.socat)

    def leftovers(self):
        """Files of a QEMU that is gone (pidfile, sockets), which clean_leftovers removes."""
        candidates = (self.paths.pidfile, self.paths.qmp, self.paths.monitor, self.paths.serial,
                      self.paths.agent, self.paths.seed)
        return [path for path in candidates if os.path.lexists(path)]

    def dead_state(self):
        """'crashed' or 'stopped' for an instance whose QEMU is gone.

        Only a QEMU that died uncleanly leaves its pidfile: one that exits
        cleanly (the guest powered itself off, or QMP quit) removes it itself,
        pid/ being its user's. Sockets are no evidence: a QEMU running as its
        own user cannot remove them from the root-only ctrl/. After a reboot
        (run_dir emptied) a guest the collection last left running crashed
        with its node (_policy.went_down_running).
        """
        if os.path.lexists(self.paths.pidfile):
            return 'crashed'
        if went_down_running(load_last(self.paths), os.path.lexists(self.paths.runtime)):
            return 'crashed'
        return 'stopped'

    def status(self):
        """What the instance is here: the record of _observe.observe (a monitor
        that does not answer raises MonitorError)."""
        return observe(self, strict=True)

    def runtime(self):
        return load_runtime(self.paths, self.name)

    # -- starting --------------------------------------------------------
    def prepare_argv(self, spec, qemu, accel, paused=False, incoming=None):
        """argv for spec plus the taps it needs ({NIC index: tap name}, not yet made)."""
        if self.qemu_user is None:
            raise StateError('no run_as user resolved to start QEMU with', instance=self.name)
        taps = dict((index, tap_name(self.layout.run_dir, self.name, index))
                    for index, nic in enumerate(spec['nics']) if nic['type'] == 'bridge')
        argv = build_argv(spec, self.paths, qemu, accel, taps=taps,
                          vnc_password=self.vnc_password() is not None,
                          paused=paused, incoming=incoming, user_args=self.qemu_user.argv())
        return argv, taps

    def vnc_password(self):
        for path in (self.paths.vnc_password, self.paths.legacy_vnc_password):
            try:
                with open(path) as handle:
                    return handle.read().rstrip('\n')
            except FileNotFoundError:
                continue
        return None

    def start(self, argv, spec, accel, qemu_version=None, paused=False):
        """Start QEMU from argv; return the pid. The runtime is written first,
        so a run cut off mid-start still leaves the instance identifiable."""
        if self.pid() is not None:
            raise StateError('already running', instance=self.name)
        self.layout.ensure(self.qemu_user)
        self.clean_leftovers()
        save_runtime(self.paths, make_runtime(argv, spec, accel, qemu_version))
        password = self.vnc_password() if spec.get('vnc_bind_address') else None
        # With a VNC password the guest is held (-S) until the password is set.
        hold = password is not None and not paused and '-S' not in argv
        try:
            create_taps(self.run, self.layout.run_dir, self.name, spec['nics'])
            if spec.get('cloud_init'):
                _seed.build(self.run, spec['cloud_init'], self.paths.seed, self.layout.subdir('conf'),
                            qemu_user=self.qemu_user, instance=self.name)
            pid, session = launch(argv[:1] + ['-S'] + argv[1:] if hold else argv, self.paths.log,
                                  self.paths.qmp, instance=self.name, socat=self.socat, run_dir=self.layout.run_dir)
        except KvmError:
            self._clean_failed_start()
            raise
        with session:
            if password is not None:
                session.execute('change-vnc-password', {'password': password})
            if hold:
                session.execute('cont')
        if self.pid() != pid:
            raise ProcessError('QEMU pid %d came up but does not hold its pidfile %s'
                               % (pid, self.paths.pidfile), instance=self.name)
        return pid

    def _clean_failed_start(self):
        pid = self.pid()
        if pid is not None:
            _identity.signal_instance(self.paths, self.name, pid)
            self._exited(pid, QUIT_GRACE)
        self.clean_leftovers()

    # -- stopping --------------------------------------------------------
    def stop(self, mode='acpi', timeout=DEFAULT_SHUTDOWN_TIMEOUT, force=False):
        """Stop the instance; return how: None (was not running), 'agent', 'acpi' or 'forced'.

        ``mode`` acpi presses the power button with backoff until ``timeout``;
        a guest still up then is forced off only with ``force``, else it is
        left running and StateError is raised. A paused guest is resumed first
        so it can react; one that never ran (started paused, or waiting for an
        incoming migration) has nothing to shut down and is forced off.
        ``mode`` kill forces at once. ``mode`` agent asks the guest agent
        first and, when it does not answer, presses the power button for the
        rest of ``timeout`` ('agent' is then returned when the agent did it).
        """
        pid = self.pid()
        if pid is None:
            self.clean_leftovers()
            return None
        how = None
        if mode in ('acpi', 'agent'):
            with self.monitor() as qmp:
                run_state = qmp.execute('query-status')['status']
                if run_state in RESUME_TO_POWER_OFF:
                    # A paused guest cannot see the power button: let it run to shut down.
                    qmp.execute('cont')
            if run_state in NEVER_RAN:
                # No guest code has run yet: there is nothing to shut down gracefully.
                mode = 'kill'
        if mode == 'agent':
            deadline = time.monotonic() + timeout
            answered = self._agent_powerdown(pid, timeout)
            if answered:
                how = 'agent'
            elif answered is None:
                mode, timeout = 'acpi', max(0.0, deadline - time.monotonic())
            elif not force:
                raise StateError('did not power off within %.0f s after the guest agent was asked to'
                                 ' (guest-shutdown) and is still running; set force: true (or'
                                 ' stop_mode: kill) to force it off' % timeout, instance=self.name)
        if mode == 'acpi' and how is None:
            if self._powerdown(pid, timeout):
                how = 'acpi'
            elif not force:
                raise StateError('did not power off within %.0f s after ACPI powerdown and is still'
                                 ' running; set force: true (or stop_mode: kill) to force it off'
                                 % timeout, instance=self.name)
        if how is None:
            self._force_off(pid)
            how = 'forced'
        self.clean_leftovers()
        return how

    def kill(self, pid):
        """SIGKILL the identified QEMU pid at once, without asking its monitor
        (one that does not answer: a stopped process dies of SIGKILL too),
        then remove its files. False when another QEMU of this instance holds
        the pidfile by now (nothing is signalled then; its files stay)."""
        if not _identity.signal_instance(self.paths, self.name, pid) and self.pid() is not None:
            return False
        if not self._exited(pid, QUIT_GRACE):
            raise ProcessError('QEMU pid %d survived SIGKILL' % pid, instance=self.name)
        self.clean_leftovers()
        return True

    def _exited(self, pid, within):
        deadline = time.monotonic() + within
        while True:
            if _identity.find_pid(self.paths, self.name) != pid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(EXIT_POLL)

    def _powerdown(self, pid, timeout):
        deadline = time.monotonic() + timeout
        presses = 0
        while True:
            try:
                with self.monitor() as qmp:
                    qmp.execute('system_powerdown')
            except MonitorError:
                if self._exited(pid, 0):
                    return True
                raise
            wait = POWERDOWN_BACKOFF[min(presses, len(POWERDOWN_BACKOFF) - 1)]
            presses += 1
            remaining = deadline - time.monotonic()
            if self._exited(pid, max(0.0, min(wait, remaining))):
                return True
            if time.monotonic() >= deadline:
                return False

    def _agent_powerdown(self, pid, timeout):
        """Ask the agent to power off; whether QEMU exited within timeout, or
        None at once when the agent does not answer (the caller falls back).
        (guest-shutdown answers nothing: the resynchronisation before it is
        what shows the agent is there.)"""
        try:
            agent_shutdown(self.paths.agent, instance=self.name,
                           timeout=min(self.monitor_timeout, AGENT_ANSWER_WAIT, timeout), socat=self.socat)
        except AgentError as err:
            self.notes.append('the guest agent did not power it off (%s); pressed the ACPI power button'
                              ' instead' % err.msg)
            return None
        return self._exited(pid, timeout)

    def _force_off(self, pid):
        """QMP quit (QEMU exits cleanly), else SIGKILL to the identified process."""
        try:
            with self.monitor(timeout=5.0) as qmp:
                qmp.execute('quit')
            quit_sent = True
        except MonitorError:
            # Monitor gone or frozen (a stopped process): no point waiting for it.
            quit_sent = False
        if quit_sent and self._exited(pid, QUIT_GRACE):
            return
        if not _identity.signal_instance(self.paths, self.name, pid):
            return
        if not self._exited(pid, QUIT_GRACE):
            raise ProcessError('QEMU pid %d survived SIGKILL' % pid, instance=self.name)

    def clean_leftovers(self):
        """Remove pidfile, sockets, runtime, QEMU's log and taps of a dead instance.

        Refuses while the instance runs: a live instance's files are never removed.
        """
        if self.pid() is not None:
            raise StateError('refusing to clean the files of a running instance', instance=self.name)
        removed = remove_quietly(self.paths.pidfile, self.paths.qmp, self.paths.monitor,
                                 self.paths.serial, self.paths.agent, self.paths.seed,
                                 self.paths.runtime, self.paths.log)
        removed += remove_taps(self.run, existing_taps(self.layout.run_dir, self.name))
        return removed

    # -- pausing ---------------------------------------------------------
    def pause(self):
        with self.monitor() as qmp:
            qmp.execute('stop')

    def resume(self):
        with self.monitor() as qmp:
            qmp.execute('cont')
