# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One kvm_snapshot task: look at the instance, decide, act, look again.

The whole task holds the instance's lock (_locking), so kvm_instance and
kvm_migrate cannot start, stop or move the guest meanwhile. A running (or
paused) guest's snapshots are made through its monitor (_snapshot_live), a
stopped instance's with qemu-img (_snapshot_offline); which one is decided
once, from what _observe sees under the lock. A guest in any other state (a
migration under way, an incoming copy, a monitor that does not answer) is
refused. Check mode makes the same decision without the lock and without
acting on it.
"""

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu_user
from ansible_collections.hvops.kvm.plugins.module_utils import _snapshot_live as live
from ansible_collections.hvops.kvm.plugins.module_utils import _snapshot_offline as offline
from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._locking import instance_lock
from ansible_collections.hvops.kvm.plugins.module_utils._observe import observe
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT as DEFAULT_MONITOR_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import load_definition
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot_rules import (
    find, retention_victims, shown, snapshot_disks, validate_retention, validate_snapshot_name)
from ansible_collections.hvops.kvm.plugins.module_utils._states import DOWN, LIVE
from ansible_collections.hvops.kvm.plugins.module_utils._values import seconds

# What kvm_snapshot does; 'list' is kvm_snapshot_info's, which changes nothing.
STATES = ('present', 'absent', 'reverted')
LIST = 'list'
# Seconds a snapshot job (saving or loading the guest's RAM) may take.
DEFAULT_TIMEOUT = 300


def _given(params, key, default):
    value = params.get(key)
    return default if value is None else value


class SnapshotTask:
    """One kvm_snapshot task on one instance of this node."""

    def __init__(self, params, run):
        self.params = params
        self.run = run
        self.name = params['name']
        self.layout = NodeLayout(params.get('run_dir'), params.get('state_dir'))
        self.instance = Instance(self.layout, self.name, run,
                                 monitor_timeout=_given(params, 'monitor_timeout', DEFAULT_MONITOR_TIMEOUT))
        self.state = _given(params, 'state', 'present')
        if self.state not in STATES + (LIST,):
            raise ValidationError('unknown state %r' % (self.state,), instance=self.name)
        self.snapshot = params.get('snapshot')
        if self.state != LIST or self.snapshot is not None:
            validate_snapshot_name(self.snapshot, self.name)
        self.retention = validate_retention(params.get('retention'), self.name)
        if self.retention is not None and self.state != 'present':
            raise ValidationError('retention applies to state present only', instance=self.name)
        self.vmstate = params.get('vmstate')
        self.freeze = bool(params.get('freeze'))
        self.timeout = seconds(_given(params, 'timeout', DEFAULT_TIMEOUT), 'timeout', low=1.0)
        self.lock_timeout = seconds(_given(params, 'lock_timeout', DEFAULT_LOCK_TIMEOUT), 'lock_timeout')
        self.known_user = None
        self.warnings = []

    # -- looking ---------------------------------------------------------
    def look(self):
        """What the instance is: {state, live, spec}. Refuses an instance that
        is neither live nor down, and one this node does not know."""
        self.known_user = _qemu_user.lookup(_given(self.params, 'run_as', _qemu_user.DEFAULT_RUN_AS))
        self.layout.verify(self.known_user)
        status = observe(self.instance, strict=True)
        state = status['state']
        if state in LIVE:
            runtime = self.instance.runtime()
            if runtime is None:
                raise StateError('runs but has no runtime file: cannot tell its disks', instance=self.name)
            return {'state': state, 'live': True, 'spec': runtime['spec']}
        if state in DOWN:
            spec = load_definition(self.instance.paths)
            if spec is None:
                raise ValidationError('no such instance on this node (no definition in %s)'
                                      % self.layout.state_subdir('guests'), instance=self.name)
            return {'state': state, 'live': False, 'spec': spec}
        raise StateError('is %s (a migration is under way or unfinished, or its monitor is busy); refusing to'
                         ' touch its snapshots: finish or recover the migration with hvops.kvm.kvm_migrate'
                         ' first' % state, instance=self.name)

    def disks(self, view, qmp=None):
        """The disks with their snapshots, as the running QEMU or qemu-img sees them."""
        wanted = snapshot_disks(view['spec'], self.name)
        if view['live']:
            return live.live_disks(qmp, wanted, self.name)
        return offline.offline_disks(self.run, wanted, self.layout, self.name)

    @staticmethod
    def listing(view, disks):
        return live.live_snapshots(disks) if view['live'] else offline.offline_snapshots(disks)

    # -- deciding --------------------------------------------------------
    def plan(self, view, snapshots):
        """[(verb, snapshot name)] to do, in order: create, delete, revert."""
        if self.state == LIST:
            if self.snapshot is not None:
                find(snapshots, self.snapshot, self.name)
            return []
        existing = find(snapshots, self.snapshot, self.name)
        if self.state == 'absent':
            return [('delete', self.snapshot)] if existing else []
        if self.state == 'reverted':
            return [('revert', self.snapshot)] if self._can_revert(view, existing) else []
        actions = []
        predicted = list(snapshots)
        if existing is None:
            self._check_create(view)
            actions.append(('create', self.snapshot))
            predicted.append({'name': self.snapshot, 'date': float('inf'), 'complete': True})
        if self.retention is not None:
            actions += [('delete', victim) for victim in
                        retention_victims(predicted, self.retention, spare=self.snapshot)]
            skipped = [record['name'] for record in snapshots if not record['complete']]
            if skipped:
                self.warnings.append('retention left alone the snapshots that not every disk has: %s'
                                     % ', '.join(skipped))
        return actions

    def with_vmstate(self, view):
        return view['live'] if self.vmstate is None else bool(self.vmstate)

    def _check_create(self, view):
        vmstate = self.with_vmstate(view)
        if vmstate and not view['live']:
            raise ValidationError('is not running: a snapshot of a stopped instance cannot hold RAM state'
                                  ' (omit vmstate, or set it false)', instance=self.name)
        if self.freeze and view['live']:
            if vmstate:
                raise ValidationError('freeze is for disk-only snapshots (vmstate false): a snapshot with RAM'
                                      ' is consistent by itself, and a reverted guest would come back frozen',
                                      instance=self.name)
            if not view['spec'].get('guest_agent'):
                raise ValidationError('freeze needs the guest agent, and this guest runs without one'
                                      ' (guest_agent: true)', instance=self.name)
            if view['state'] != 'running':
                raise StateError('is %s: its guest agent cannot freeze the file systems; resume it first'
                                 % view['state'], instance=self.name)

    def _can_revert(self, view, existing):
        if existing is None:
            raise StateError('has no snapshot %s to revert to' % self.snapshot, instance=self.name)
        if view['live'] and not existing['vmstate']:
            raise StateError('snapshot %s holds only the disks, and a running guest cannot be reverted to'
                             ' disks alone (its RAM would not match them): stop it with hvops.kvm.kvm_instance'
                             ' state=stopped, revert, and start it again' % self.snapshot, instance=self.name)
        if not view['live'] and existing['vmstate']:
            self.warnings.append('instance %s is stopped: its disks go back to snapshot %s, its RAM state does'
                                 ' not (the next start boots from the disks as they were then; start the'
                                 ' guest and revert it while it runs to get the RAM back)'
                                 % (self.name, self.snapshot))
        return True

    # -- doing -----------------------------------------------------------
    def act(self, view, disks, actions, qmp=None):
        for verb, name in actions:
            having = [disk for disk in disks if any(item and item['name'] == name for item in disk['snapshots'])]
            if view['live']:
                self._act_live(qmp, view, disks, having, verb, name)
            elif verb == 'create':
                offline.create(self.run, disks, name, self.name)
            elif verb == 'delete':
                offline.delete(self.run, having, name)
            else:
                offline.revert(self.run, disks, name)

    def _act_live(self, qmp, view, disks, having, verb, name):
        if verb == 'delete':
            live.delete(qmp, having, name, self.timeout)
        elif verb == 'revert':
            live.load(qmp, disks, name, self.timeout, self.name)
        elif self.with_vmstate(view):
            live.save(qmp, disks, name, self.timeout)
        elif self.freeze:
            with live.frozen(self.instance.paths.agent, self.name, self.instance.monitor_timeout,
                             self.instance.socat):
                live.disk_only(qmp, disks, name)
        else:
            live.disk_only(qmp, disks, name)

    def once(self, check_mode):
        """(view, snapshots before, actions, snapshots after)."""
        self.warnings = []
        view = self.look()
        if view['live']:
            with self.instance.monitor() as qmp:
                return self._once(view, check_mode, qmp)
        return self._once(view, check_mode)

    def _once(self, view, check_mode, qmp=None):
        disks = self.disks(view, qmp)
        before = self.listing(view, disks)
        actions = self.plan(view, before)
        if check_mode or not actions:
            return view, before, actions, before
        self.act(view, disks, actions, qmp)
        return view, before, actions, self.listing(view, self.disks(view, qmp))


def predicted_names(before, actions):
    names = [record['name'] for record in before]
    for verb, name in actions:
        if verb == 'create':
            names.append(name)
        elif verb == 'delete':
            names.remove(name)
    return names


def run_task(params, run, check_mode=False):
    """The whole kvm_snapshot task: (result, diff)."""
    task = SnapshotTask(params, run)
    # Everything is checked before anything is written or locked: a task
    # that would change nothing, or is refused, leaves the node as it was.
    view, before, actions, after = task.once(check_mode=True)
    if actions and not check_mode:
        task.layout.ensure(task.known_user)
        with instance_lock(task.instance.paths, task.name, timeout=task.lock_timeout):
            # Decided again under the lock: another run may have acted meanwhile.
            view, before, actions, after = task.once(check_mode=False)
    result = {
        'changed': bool(actions),
        'name': task.name,
        'snapshot': task.snapshot,
        'state': view['state'],
        'actions': ['%s %s' % action for action in actions],
        'snapshots': shown(after),
        'warnings': task.warnings,
    }
    diff = {'before': {'snapshots': [record['name'] for record in before]},
            'after': {'snapshots': predicted_names(before, actions)}}
    return result, diff
