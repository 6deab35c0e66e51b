# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring one instance to the state a kvm_instance task asks for.

``plan`` looks and decides, touching nothing; ``apply`` carries the plan out.
Check mode runs only ``plan``, so its prediction is the real run's decision.
"""

import shlex

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu, _qemu_user, _seed
from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import vnc_has_password
from ansible_collections.hvops.kvm.plugins.module_utils._resources import check_resources
from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._files import write_atomic
from ansible_collections.hvops.kvm.plugins.module_utils._instance import DEFAULT_SHUTDOWN_TIMEOUT, Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT as DEFAULT_MONITOR_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT, instance_lock
from ansible_collections.hvops.kvm.plugins.module_utils._policy import (
    POLICY_DEFAULTS, checked_policy, load_last, mark, policy_files, save_policy, stored_policy)
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import (
    has_vnc_password, load_definition, save_definition, undefine)
from ansible_collections.hvops.kvm.plugins.module_utils._states import DOWN, LIVE
from ansible_collections.hvops.kvm.plugins.module_utils._spec import (
    SPEC_DEFAULTS, check_host_files, disk_clash, normalize_spec, shown)
from ansible_collections.hvops.kvm.plugins.module_utils._values import seconds
from ansible_collections.hvops.kvm.plugins.module_utils._values import vnc_password as check_vnc_password

STATES = ('present', 'started', 'stopped', 'restarted', 'paused', 'absent')
STOP_MODES = ('acpi', 'agent', 'kill')
CONSOLE_ESCAPE = '0x1d'  # Ctrl-]


def _given(params, key, default):
    value = params.get(key)
    return default if value is None else value


def console_argv(serial_socket):
    """socat command for the serial console; Ctrl-] leaves it."""
    return ['socat', 'STDIO,raw,echo=0,escape=%s' % CONSOLE_ESCAPE, 'UNIX-CONNECT:%s' % serial_socket]


class Reconciler:
    """One kvm_instance task. ``params`` are the module's parameters (plus,
    from the node's own service, ``_by``: what the last state records as
    having started or stopped the guest)."""

    def __init__(self, params, run):
        self.params = params
        self.name = params['name']
        self.layout = NodeLayout(params.get('run_dir'), params.get('state_dir'))
        self.instance = Instance(self.layout, self.name, run,
                                 monitor_timeout=_given(params, 'monitor_timeout', DEFAULT_MONITOR_TIMEOUT))
        self.shutdown_timeout = seconds(_given(params, 'shutdown_timeout', DEFAULT_SHUTDOWN_TIMEOUT),
                                        'shutdown_timeout')
        self.lock_timeout = seconds(_given(params, 'lock_timeout', DEFAULT_LOCK_TIMEOUT), 'lock_timeout')
        self.run = run
        self.warnings = []
        self.known_user = None
        # The QEMU binary's version and machine types, asked once per task
        # (the plan is made twice: before and under the lock).
        self._binaries = {}

    # -- deciding --------------------------------------------------------
    def desired_spec(self, stored):
        """The spec to store: the stored definition with the given options over it."""
        given = dict((key, self.params.get(key)) for key in SPEC_DEFAULTS
                     if self.params.get(key) is not None)
        if stored is None and not given:
            return None
        base = dict((k, v) for k, v in (stored or {}).items() if k in SPEC_DEFAULTS)
        base.update(given)
        spec = normalize_spec(self.name, base)
        if stored and 'machine' not in given:
            spec['machine'] = stored.get('machine')
        return spec

    def desired_policy(self, stored):
        """The policy to store: the stored one with the given options over it,
        or None when there is none and none is given."""
        given = dict((key, self.params.get(key)) for key in POLICY_DEFAULTS
                     if self.params.get(key) is not None)
        if stored is None and not given:
            return None
        return checked_policy(dict(stored or {}, **given), self.name)

    def plan(self):
        """Decide what to do. Returns a dict describing current and target state."""
        state = self.params['state']
        paths = self.instance.paths
        run_as = self.params.get('run_as') or _qemu_user.DEFAULT_RUN_AS
        self.known_user = _qemu_user.lookup(run_as)
        self.layout.verify(self.known_user)
        stored = load_definition(paths)
        stored_pol = stored_policy(paths, self.name)
        policy = None if state == 'absent' else self.desired_policy(stored_pol)
        status = self.instance.status()
        current = status['state']
        if current not in LIVE + DOWN and state != 'present':
            raise StateError('is %s (a migration is under way or unfinished); refusing to make it %s:'
                             ' finish or recover the migration with hvops.kvm.kvm_migrate first'
                             % (current, state), instance=self.name)
        runtime = self.instance.runtime() if current in LIVE else None
        spec = None if state == 'absent' else self.desired_spec(stored)
        qemu_info = None
        needs_definition = state in ('present', 'started', 'restarted', 'paused')
        if needs_definition and spec is None:
            raise ValidationError('no stored definition: give the instance spec (memory, disks, ...)'
                                  ' the first time', instance=self.name)
        if policy is not None and spec is None:
            raise ValidationError('autostart and restart_policy belong to a defined instance: give the'
                                  ' instance spec (memory, disks, ...) the first time', instance=self.name)
        if spec is not None:
            qemu_info = self.qemu_info(spec['qemu_binary'])
            spec['machine'] = _qemu.pin_machine(qemu_info, spec['machine'])
            will_start = state in ('started', 'restarted', 'paused') and current not in LIVE or \
                state == 'restarted'
            if will_start:
                self.instance.qemu_user = _qemu_user.resolve(run_as)
            if spec != stored or will_start:
                # Everything this node can check is checked before the
                # definition is stored or QEMU started.
                check_host_files(spec, self.instance.qemu_user)
                if will_start and spec['cloud_init']:
                    # Its seed is made at start: refuse before anything is written.
                    _seed.find_tool()
                check_resources(spec, self.cpu_models(qemu_info) if spec['cpu_model'] else None)
                self._check_conflicts(spec)
        password = self.params.get('vnc_password')
        if password is not None:
            check_vnc_password(password)
        plan = {
            'state': state,
            'current': current,
            'pid': status['pid'],
            'stored': stored,
            'spec': spec,
            'runtime': runtime,
            'qemu': qemu_info,
            'write_definition': spec is not None and spec != stored,
            'stored_policy': stored_pol,
            'policy': policy,
            'write_policy': policy is not None and policy != stored_pol,
            'last': load_last(paths),
            'write_password': password is not None and password != self.instance.vnc_password(),
            'actions': [],
        }
        plan['actions'] = self._actions(plan)
        return plan

    def qemu_info(self, binary):
        path = _qemu.find_qemu(binary)
        if path not in self._binaries:
            self._binaries[path] = _qemu.query_binary(self.run, path)
        return self._binaries[path]

    def cpu_models(self, qemu_info):
        if 'cpu_models' not in qemu_info:
            qemu_info['cpu_models'] = _qemu.query_cpu_models(self.run, qemu_info['path'])
        return qemu_info['cpu_models']

    def _check_conflicts(self, spec):
        clash = disk_clash(self.layout, self.name, spec)
        if clash:
            raise ValidationError(clash, instance=self.name)

    def _actions(self, plan):
        state, current = plan['state'], plan['current']
        running_spec = (plan['runtime'] or {}).get('spec')
        drift = current in LIVE and plan['spec'] is not None and running_spec is not None \
            and running_spec != plan['spec']
        plan['password_needs_restart'] = self._password_needs_restart(plan)
        plan['pending_restart'] = (drift or plan['password_needs_restart']) and state != 'restarted'
        actions = []
        if state == 'absent':
            if current in LIVE:
                actions.append('stop')
            if current == 'crashed':
                actions.append('clean')
            paths = self.instance.paths
            if plan['stored'] is not None or has_vnc_password(paths) or policy_files(paths):
                actions.append('undefine')
            return actions
        if plan['write_definition']:
            actions.append('define')
        if plan['write_policy']:
            actions.append('set_policy')
        if plan['write_password']:
            actions.append('set_password')
        if state == 'stopped':
            if current in LIVE:
                actions.append('stop')
            elif current == 'crashed':
                actions.append('clean')
        elif state == 'started':
            if current == 'paused':
                actions.append('resume')
            elif current not in LIVE:
                actions.append('start')
        elif state == 'paused':
            if current == 'running':
                actions.append('pause')
            elif current not in LIVE:
                actions.append('start_paused')
        elif state == 'restarted':
            if current in LIVE:
                actions.append('stop')
            actions.append('start')
        return actions

    def _password_needs_restart(self, plan):
        """A VNC password for a running guest whose VNC was started without
        password authentication: QEMU cannot turn it on while it runs."""
        spec = plan['spec']
        if plan['current'] not in LIVE or not spec or not spec['vnc_bind_address'] or not plan['runtime']:
            return False
        wanted = plan['write_password'] or self.instance.vnc_password() is not None
        return wanted and not vnc_has_password(plan['runtime']['argv'])

    # -- doing -----------------------------------------------------------
    def apply(self, plan):
        """Carry out the plan under the instance lock.

        The plan is made again once the lock is held: another run may have
        changed the instance between the first look and the lock. Returns the
        plan carried out and the facts it produced.
        """
        result = {'stop_method': None}
        if not plan['actions']:
            return plan, result
        self.layout.ensure(self.instance.qemu_user or self.known_user)
        taken = self.layout.take_over()
        if taken:
            self.warnings.append('moved the definitions of %s from run_dir/conf (collection 0.1) to %s'
                                 % (', '.join(taken), self.layout.state_subdir('guests')))
        with instance_lock(self.instance.paths, self.name, timeout=self.lock_timeout):
            plan = self.plan()
            for action in plan['actions']:
                getattr(self, '_do_' + action)(plan, result)
        return plan, result

    def settle_last(self, plan):
        """A guest that is stopped as asked but that the collection last left
        running (its guest powered it off) is recorded as stopped, so that a
        reboot does not take it for a crash. Not a change: nothing else moves."""
        if plan['state'] == 'stopped' and plan['current'] == 'stopped' and \
                (plan['last'] or {}).get('state') == 'running':
            mark(self.instance.paths, 'stopped', 'guest')

    def _do_define(self, plan, result):
        save_definition(self.instance.paths, plan['spec'])

    def _do_set_policy(self, plan, result):
        save_policy(self.instance.paths, plan['policy'])

    def _do_set_password(self, plan, result):
        write_atomic(self.instance.paths.vnc_password, self.params['vnc_password'] + '\n', mode=0o600)
        if plan['current'] in LIVE and plan['spec'] and plan['spec']['vnc_bind_address'] \
                and 'stop' not in plan['actions'] and not plan['password_needs_restart']:
            with self.instance.monitor() as qmp:
                qmp.execute('change-vnc-password', {'password': self.params['vnc_password']})

    def _do_stop(self, plan, result):
        result['stop_method'] = self.instance.stop(
            mode=self.params.get('stop_mode') or 'acpi',
            timeout=self.shutdown_timeout,
            force=bool(self.params.get('force')))
        self.warnings.extend(self.instance.notes)
        self._mark('stopped')

    def _do_clean(self, plan, result):
        self.instance.clean_leftovers()
        self._mark('stopped')

    def _do_undefine(self, plan, result):
        undefine(self.instance.paths)

    def _mark(self, state):
        if self.params['state'] != 'absent':
            mark(self.instance.paths, state, self.params.get('_by') or 'kvm_instance')

    def _start(self, plan, paused):
        spec = plan['spec']
        runtime = plan['runtime']
        info = plan['qemu']
        if runtime and runtime.get('spec') == spec:
            # A restart keeps the accelerator it ran with (auto may pick
            # another one now); the argv is built again, so a VNC password
            # set since, or another run_as, takes effect.
            accel = runtime['accel']
        else:
            accel = _qemu.resolve_accel(spec['accel'])
        argv, _taps = self.instance.prepare_argv(spec, info['path'], accel, paused=paused)
        self.instance.start(argv, spec, accel, qemu_version=info['version'], paused=paused)

    def _do_start(self, plan, result):
        self._start(plan, paused=False)
        self._mark('running')

    def _do_start_paused(self, plan, result):
        self._start(plan, paused=True)
        self._mark('running')

    def _do_pause(self, plan, result):
        self.instance.pause()

    def _do_resume(self, plan, result):
        self.instance.resume()
        self._mark('running')

    # -- reporting -------------------------------------------------------
    def facts(self):
        """What a task returns about the instance after the run."""
        paths = self.instance.paths
        status = self.instance.status()
        stored = load_definition(paths)
        state = status['state']
        if state == 'stopped' and stored is None:
            state = 'absent'
        runtime = self.instance.runtime() if status['pid'] else None
        console = console_argv(paths.serial)
        return {
            'name': self.name,
            'state': state,
            'pid': status['pid'],
            'accel': runtime['accel'] if runtime else None,
            'argv': runtime['argv'] if runtime else None,
            'sockets': {'qmp': paths.qmp, 'monitor': paths.monitor, 'serial': paths.serial},
            'console_command': ' '.join(shlex.quote(word) for word in console),
            'definition': shown(stored),
            'policy': stored_policy(paths, self.name) if stored is not None else None,
        }


def diff_view(state, definition, policy=None):
    view = {'state': state}
    if definition is not None:
        view['definition'] = shown(definition)
    if policy is not None:
        view['policy'] = policy
    return view


def predicted_state(plan):
    state, current = plan['state'], plan['current']
    if state == 'absent':
        return 'absent'
    if state in ('started', 'restarted'):
        return 'running'
    if state == 'paused':
        return 'paused'
    if state == 'stopped':
        return 'stopped'
    return current if current in LIVE else 'stopped'


def run_task(params, run, check_mode=False):
    """The whole kvm_instance task: returns (result dict, diff)."""
    reconciler = Reconciler(params, run)
    plan = reconciler.plan()
    if check_mode:
        result = {'stop_method': None}
    else:
        plan, result = reconciler.apply(plan)
        reconciler.settle_last(plan)
    result.update(reconciler.facts())
    before = diff_view(plan['current'] if plan['stored'] is not None or plan['current'] != 'stopped'
                       else 'absent', plan['stored'], plan['stored_policy'])
    absent = plan['state'] == 'absent'
    after = diff_view(predicted_state(plan), None if absent else (plan['spec'] or plan['stored']),
                      None if absent else plan['policy'])
    result['changed'] = bool(plan['actions'])
    result['actions'] = plan['actions']
    result['pending_restart'] = plan.get('pending_restart', False)
    if plan.get('password_needs_restart') and result['pending_restart']:
        reconciler.warnings.append(
            'instance %s was started without a VNC password, and QEMU cannot require one while it'
            ' runs: its VNC display has NO password until state=restarted' % reconciler.name)
    elif result['pending_restart']:
        reconciler.warnings.append(
            'instance %s runs with a spec that differs from its definition; use state=restarted'
            ' to apply the change' % reconciler.name)
    result['warnings'] = reconciler.warnings
    return result, {'before': before, 'after': after}
