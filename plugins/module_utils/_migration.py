# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of one instance from a source node to a target node, in phases.

Each phase runs on the node it names, under that node's instance lock; a play
carries each phase's result to the next (as libvirt's v3 migration protocol
and Ganeti's MigrationInfo / AcceptInstance / MigrateInstance /
FinalizeMigration do)::

    prepare   source  the guest runs here and is ours: its runtime and what a
                      target needs (memory, files, bridges, QEMU, machine type)
    accept    target  pre-checks, then a paused QEMU waiting for the guest
                      (-S -incoming defer) that listens on the first free port
                      of a range (migrate-incoming)
    migrate   source  capabilities and parameters set explicitly, migrate, wait
                      on MIGRATION events in one QMP session (query-migrate as
                      the fallback); a stall or the overall timeout cancels;
                      statistics read once QEMU has filled them in
    finalize  target  success: resume the guest here, it now lives here;
                      failure: kill the incoming QEMU and remove its files
                      (one whose monitor is silent only on the source's
                      status, peer_status, showing its migration unfinished)
    confirm   source  success: stop the migrated-away copy, remove its files;
                      failure: resume the guest here, once the target is dead
    status    either  what the copy here looks like, for recover
    recover   either  after an interrupted run, from both nodes' status: keep
                      exactly one copy; never start a guest that runs nowhere

What keeps a guest from running twice: the target's QEMU starts with -S and
only finalize(success) resumes it, and only once its incoming migration has
completed. Until then the source owns the guest, from then on the target.
finalize(failure) refuses to kill a target copy that has been resumed, or
one whose monitor does not answer unless the source shows it kept the guest
(_migration_recover.may_kill_silent_target), and
confirm(failure) resumes the source only when told that the target is dead
(``cont`` works on a source in postmigrate even while the target runs).

The phases call one file per concern, so that they read as the protocol:
_migration_intake (what a source sends, checked as untrusted input),
_migration_checks (whether this node can take the guest), _migration_settings
(options, capabilities and parameters), _migration_tls (credentials),
_migration_watch (the outgoing migration under way), _migration_stats (its
figures) and _migration_recover (which copy to keep).
"""

import contextlib
import os
import time

from ansible_collections.hvops.kvm.plugins.module_utils import _migration_tls, _qemu, _qemu_user, _storage_copy
from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MigrationError, MonitorError, StateError, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._files import write_atomic
from ansible_collections.hvops.kvm.plugins.module_utils._resources import bridge_exists
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._locking import instance_lock
from ansible_collections.hvops.kvm.plugins.module_utils._migration_checks import requirements_of, target_problems
from ansible_collections.hvops.kvm.plugins.module_utils._migration_intake import checked_definition, checked_runtime
from ansible_collections.hvops.kvm.plugins.module_utils._migration_recover import (
    decide, may_kill_silent_target, source_gone)
from ansible_collections.hvops.kvm.plugins.module_utils._policy import checked_policy, mark, save_policy, stored_policy
from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import (
    DEFAULTS, capabilities, check_options, listen_address, parameters, parse_port_range, parse_uri, tcp_uri)
from ansible_collections.hvops.kvm.plugins.module_utils._migration_watch import Outgoing, resume
from ansible_collections.hvops.kvm.plugins.module_utils._observe import observe
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import first_free_port
from ansible_collections.hvops.kvm.plugins.module_utils._proc import available_kib, flock_held, held_locks, meminfo
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import (
    has_definition, has_vnc_password, load_definition, make_runtime, save_definition, save_runtime, undefine)
from ansible_collections.hvops.kvm.plugins.module_utils._spec import check_host_files, disk_clash
from ansible_collections.hvops.kvm.plugins.module_utils._states import OUTGOING_MIGRATION, copy_kind, guest_state
from ansible_collections.hvops.kvm.plugins.module_utils._values import vnc_password as check_vnc_password

PHASES = ('prepare', 'accept', 'migrate', 'finalize', 'confirm', 'status', 'recover')
ROLES = ('source', 'target')


# -- the phases ----------------------------------------------------------------------
def run_phase(params, run, check_mode=False):
    """Run one phase on this node; return its result (with ``warnings``)."""
    phase = params.get('phase')
    if phase not in PHASES:
        raise ValidationError('unknown phase %r (choose from %s)' % (phase, ', '.join(PHASES)))
    migration = Migration(params, run, check_mode)
    result = getattr(migration, phase)()
    result.setdefault('changed', False)
    result.setdefault('actions', [])
    result.update(phase=phase, name=migration.name, warnings=migration.warnings)
    return result


class Migration:
    """One phase of one instance's migration on this node."""

    def __init__(self, params, run, check_mode=False):
        self.params = dict(DEFAULTS)
        self.params.update((key, value) for key, value in params.items() if value is not None)
        check_options(self.params)
        self.name = params.get('name')
        self.layout = NodeLayout(self.params['run_dir'], self.params.get('state_dir'))
        self.known_user = _qemu_user.lookup(self.params['run_as'])
        self.layout.verify(self.known_user)
        self.instance = Instance(self.layout, self.name, run,
                                 monitor_timeout=float(self.params['monitor_timeout']))
        self.paths = self.instance.paths
        self.run = run
        self.check_mode = check_mode
        self.warnings = []

    # -- common ----------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """The instance lock of this node; check mode takes none (it writes nothing)."""
        if self.check_mode:
            yield
            return
        self.layout.ensure(self.instance.qemu_user or self.known_user)
        with instance_lock(self.paths, self.name, timeout=self.params['lock_timeout']):
            yield

    def observe(self, busy=False):
        """(record, runtime) of the copy here (_observe.observe); ``busy`` says
        another run holds the lock, and then no monitor is opened."""
        return observe(self.instance, busy=busy), self.instance.runtime()

    def settings(self, qmp, tls_parameters):
        """(capabilities, parameters) for this QEMU, checked against what it
        supports; ``tls_parameters`` from _migration_tls.parameters."""
        available = [c['capability'] for c in qmp.execute('query-migrate-capabilities')]
        return capabilities(self.params, available), dict(parameters(self.params), **tls_parameters)

    @staticmethod
    def apply_settings(qmp, caps, params):
        qmp.execute('migrate-set-capabilities', {'capabilities': caps})
        qmp.execute('migrate-set-parameters', params)

    def discard(self, remove_definition, silent_pid=None):
        """Kill the copy here (QMP quit, then SIGKILL to the identified process;
        SIGKILL at once to ``silent_pid``, a QEMU whose monitor does not answer)
        and remove its files; the definition (with VNC password, policy and
        last state) too when the guest lives elsewhere (a VNC password without
        a definition always)."""
        made = _storage_copy.created(self.instance.runtime())
        if silent_pid is None:
            self.instance.stop(mode='kill')
        elif not self.instance.kill(silent_pid):
            raise MigrationError('another QEMU of the instance took over its pidfile while pid %d was being'
                                 ' killed; take status again' % silent_pid, instance=self.name)
        if remove_definition or not has_definition(self.paths):
            undefine(self.paths)
        # Only once its QEMU is dead: the images a copy migration made for it here.
        _storage_copy.remove_images(made)

    def end_mirrors(self):
        """Abort the mirror jobs of a copy migration whose migrate phase was cut
        off before it could (they would go on writing to the target)."""
        if self.check_mode:
            return
        try:
            with self.instance.monitor() as qmp:
                leftovers = _storage_copy.Mirrors.leftovers(qmp, self.name, self.params)
                running = leftovers.abort() if leftovers is not None else None
        except MonitorError as err:
            self.warnings.append('could not look for mirror jobs of an interrupted copy migration: %s' % err.msg)
            return
        if running is not None:
            self.warnings.append('mirror jobs of an interrupted copy migration were left here: %s' % (
                'cancelled' if not running else '%s still wait on their NBD connection and end once it'
                ' breaks' % ', '.join(running)))

    def adopt(self, record, runtime):
        """Make the live copy here the guest, running; the actions (only
        predicted in check mode). An incoming copy becomes this node's instance
        first: its definition, and a runtime that restarts it normally."""
        actions = ['define', 'write_runtime'] if record['incoming'] else []
        exported = record['incoming'] and bool(_storage_copy.created(runtime))
        if exported:
            actions.append('stop_nbd_server')
        if record['kind'] != 'running':
            actions.append('resume')
        if self.check_mode:
            return actions
        if record['incoming']:
            self.instance.qemu_user = _qemu_user.resolve(self.params['run_as'])
            spec = runtime['spec']
            moved = runtime.get('migration') or {}
            save_definition(self.paths, moved.get('definition') or spec)
            if moved.get('policy') is not None:
                save_policy(self.paths, checked_policy(moved['policy'], self.name))
            mark(self.paths, 'running', 'migration')
            argv, _scripts = self.instance.prepare_argv(spec, runtime['argv'][0], runtime['accel'])
            settled = make_runtime(argv, spec, runtime['accel'], runtime.get('qemu_version'))
            settled['started_at'] = runtime.get('started_at', settled['started_at'])
            settled['migrated_at'] = time.time()
            if exported:
                # Before the guest runs here: nothing else may write its disks.
                with self.instance.monitor() as qmp:
                    _storage_copy.unexport(qmp)
            save_runtime(self.paths, settled)
        if 'resume' in actions:
            with self.instance.monitor() as qmp:
                resume(qmp, self.name)
        return actions

    # -- prepare (source) --------------------------------------------------
    def prepare(self):
        with self.locked():
            record, runtime = self.observe()
            definition = load_definition(self.paths)
            policy = stored_policy(self.paths, self.name)
        problem = self._not_migratable(record, runtime)
        if problem:
            # What the copy here is goes with the refusal: the role decides from it.
            raise StateError(problem, instance=self.name, observed=record)
        disks = None
        if self.params['storage'] == 'copy':
            with self.instance.monitor() as qmp:
                disks = _storage_copy.describe(qmp, runtime['spec'])
        return {
            'disks': disks,
            'pid': record['pid'],
            'run_state': record['run_state'],
            'runtime': runtime,
            'definition': definition,
            'policy': policy,
            'requirements': requirements_of(runtime),
            'observed': record,
        }

    @staticmethod
    def _not_migratable(record, runtime):
        """Why the copy here cannot be migrated, or None."""
        if not record['present']:
            return 'does not run on this node (it is %s); only a running guest is migrated' % record['state']
        if record['run_state'] != 'running':
            return 'is %s (QEMU run state %s), not running; only a running guest is migrated%s' % (
                record['state'], record['run_state'], ': %s' % record['error'] if record['error'] else '')
        if record['migration_status'] in OUTGOING_MIGRATION:
            return 'a migration is already under way (status %s)' % record['migration_status']
        if runtime is None:
            return 'runs without a runtime file, so it was not started by this collection'
        if record['incoming']:
            return 'arrived here by a migration that was never finalized; run the recover phase first'
        return None

    # -- accept (target) ---------------------------------------------------
    def accept(self):
        given = self.params['runtime']
        runtime, spec = checked_runtime(self.name, given, self.params['qemu_binary'])
        definition = checked_definition(self.name, self.params['definition'], self.params['qemu_binary'])
        copies = []
        if self.params['storage'] == 'copy':
            storage_map = _storage_copy.check_storage_map(self.params['storage_map'])
            spec, definition, copies = _storage_copy.plan(self.name, spec, definition, self.params['disks'],
                                                          storage_map)
            runtime['spec'] = spec
        policy = None if self.params.get('policy') is None else checked_policy(self.params['policy'], self.name)
        address = listen_address(self.params['migration_address'], self.params['allow_any_address'])
        low, high = parse_port_range(self.params['migration_ports'])
        if self.params['vnc_password'] is not None:
            check_vnc_password(self.params['vnc_password'])
        req = requirements_of(runtime)
        self.instance.qemu_user = _qemu_user.resolve(self.params['run_as'])
        tls_objects, tls_params = _migration_tls.plan(self.params, 'server', self.instance.qemu_user, self.name)
        # The target's own QEMU, whatever binary the source runs.
        qemu = _qemu.query_binary(self.run, _qemu.find_qemu(spec['qemu_binary']))
        record, _old = self.observe()
        offer = self._offer(spec, req, qemu, record, copies)
        problems = target_problems(self.name, req, offer)
        if req['vnc_password'] and self.params['vnc_password'] is None and \
                self.instance.vnc_password() is None:
            problems.append('the guest\'s VNC display has a password: pass vnc_password')
        if problems:
            raise MigrationError('refusing to accept the guest: %s' % '; '.join(problems),
                                 instance=self.name, problems=problems, observed=record)
        if has_definition(self.paths):
            self.warnings.append('the stored definition of %s here is replaced when the migration is'
                                 ' finalized' % self.name)
        result = {
            'changed': True, 'actions': (['create_images'] if copies else []) + ['start_incoming'] +
            (['load_tls_credentials'] if tls_objects else []) + (['export_disks'] if copies else []) + ['listen'],
            'storage': 'copy' if copies else 'shared', 'disks': copies, 'nbd': None,
            'tls': bool(tls_objects), 'tls_peer': self.params['tls_peer'] if tls_objects else None,
            'address': address, 'port': None, 'uri': None, 'busy_ports': [], 'pid': None,
            'qemu_version': _qemu.version_string(qemu['version']),
            'memory': {'available_mb': offer['memory_mb'],
                       'required_mb': req['memory_mb'] + offer['margin_mb']},
            'observed': record,
        }
        if self.check_mode:
            return result
        with self.locked():
            if self.instance.pid() is not None:
                raise StateError('already runs here', instance=self.name)
            made = []
            try:
                made = _storage_copy.create_images(self.run, copies, self.instance.qemu_user)
                pid = self._start_incoming(runtime, spec, definition, policy, qemu, made)
                with self.instance.monitor() as qmp:
                    _migration_tls.load(qmp, tls_objects)
                    caps, params = self.settings(qmp, tls_params)
                    self.apply_settings(qmp, caps, params)
                    if copies:
                        nbd_port = _storage_copy.export(qmp, copies, address, (low, high),
                                                        tls_creds=tls_params['tls-creds'] or None,
                                                        tls_authz=tls_params['tls-authz'] or None)
                        result['nbd'] = {'port': nbd_port, 'exports': [
                            {'index': copy['index'], 'name': copy['drive']} for copy in copies]}
                    port, busy = self._listen(qmp, address, low, high)
            except BaseException:
                self.discard(remove_definition=False)
                _storage_copy.remove_images(made)
                raise
        result['capabilities'] = dict((c['capability'], c['state']) for c in caps)
        result.update(pid=pid, port=port, uri=tcp_uri(address, port), busy_ports=busy)
        return result

    def _offer(self, spec, req, qemu, record, copies=()):
        """What this node offers the guest, for _migration_checks.target_problems;
        ``copies``: the disks a copy migration makes here (not there yet)."""
        file_problems = _storage_copy.problems(copies, self.layout, self.instance.qemu_user)
        made_here = set(copy['index'] for copy in copies)
        try:
            check_host_files(dict(spec, disks=[disk for index, disk in enumerate(spec['disks'])
                                               if index not in made_here]), self.instance.qemu_user)
        except ValidationError as err:
            file_problems.append(err.msg)
        clash = disk_clash(self.layout, self.name, spec)
        if clash:
            file_problems.append(clash)
        usable, reason = _qemu.kvm_usable() if req['accel'] == 'kvm' else (True, None)
        return {
            'copy': record if record['present'] else None,
            'memory_mb': available_kib(meminfo()) // 1024, 'memory_word': 'available',
            'margin_mb': self.params['memory_margin_mb'],
            'qemu': qemu,
            'kvm': {'usable': usable, 'reason': reason},
            'missing_bridges': set(b for b in req['bridges'] if not bridge_exists(b)),
            'file_problems': file_problems,
        }

    def _start_incoming(self, runtime, spec, definition, policy, qemu, made=()):
        password = self.params['vnc_password']
        if password is not None:
            write_atomic(self.paths.vnc_password, password + '\n', mode=0o600)
        argv, _scripts = self.instance.prepare_argv(spec, qemu['path'], runtime['accel'], incoming='defer')
        pid = self.instance.start(argv, spec, runtime['accel'], qemu_version=qemu['version'], paused=True)
        mine = self.instance.runtime()
        mine['migration'] = {'definition': definition, 'policy': policy,
                             'source_started_at': runtime.get('started_at'), 'accepted_at': time.time()}
        if made:
            mine['migration']['storage'] = {'created': list(made)}
        save_runtime(self.paths, mine)
        return pid

    def _listen(self, qmp, address, low, high):
        try:
            port, busy = first_free_port(qmp, 'migrate-incoming', lambda port: {'uri': tcp_uri(address, port)},
                                         low, high)
        except MonitorError as err:
            raise MigrationError('cannot listen on %s: %s' % (address, err.desc or err.msg), instance=self.name)
        if port is None:
            raise MigrationError('every port of %d-%d on %s is in use' % (low, high, address),
                                 instance=self.name, busy_ports=busy)
        return port, busy

    # -- migrate (source) --------------------------------------------------
    def migrate(self):
        uri = self.params['uri']
        host, _port = parse_uri(uri)
        tls = _migration_tls.plan(self.params, 'client', self.instance.qemu_user or self.known_user, self.name,
                                  hostname=host)
        with self.locked():
            pid = self.instance.pid()
            if pid is None:
                raise StateError('does not run on this node', instance=self.name)
            nbd = None
            if self.params['storage'] == 'copy':
                runtime = self.instance.runtime()
                if runtime is None:
                    raise StateError('runs without a runtime file, so it was not started by this collection',
                                     instance=self.name)
                nbd = _storage_copy.check_nbd(self.name, self.params['nbd'], runtime['spec'])
                nbd['host'] = host
            with self.instance.monitor() as qmp:
                return self._migrate(qmp, uri, tls, pid, nbd)

    def _migrate(self, qmp, uri, tls, pid=None, nbd=None):
        run_state = qmp.execute('query-status')['status']
        status = (qmp.execute('query-migrate') or {}).get('status')
        if run_state not in ('running', 'paused'):
            raise StateError('is %s (QEMU run state %s); only a running or paused guest is migrated%s'
                             % (guest_state(run_state), run_state,
                                '; after a completed migration run confirm' if run_state == 'postmigrate'
                                else ''), instance=self.name)
        if status in OUTGOING_MIGRATION:
            raise StateError('a migration is already under way (status %s)' % status, instance=self.name)
        tls_objects, tls_params = tls
        caps, params = self.settings(qmp, tls_params)
        pause = not self.params['live'] and run_state == 'running'
        result = {
            'changed': True, 'uri': uri, 'status': None, 'stats': None, 'tls': bool(tls_objects),
            'actions': (['pause'] if pause else []) + (['load_tls_credentials'] if tls_objects else []) +
            ['set_capabilities', 'set_parameters'] + (['mirror_disks'] if nbd else []) + ['migrate'],
            'storage': {'mode': 'copy' if nbd else 'shared', 'disks': len(nbd['exports']) if nbd else 0,
                        'copied_bytes': None, 'copy_seconds': None},
            'capabilities': dict((c['capability'], c['state']) for c in caps),
            'parameters': params,
        }
        if self.check_mode:
            return result
        _migration_tls.load(qmp, tls_objects)
        self.apply_settings(qmp, caps, params)
        if pause:
            qmp.execute('stop')
        qmp.drain_events()
        result['started_at'] = time.time()
        mirrors = None
        try:
            if nbd:
                mirrors = self._copy_disks(qmp, nbd, tls_params, result)
            Outgoing(qmp, self.name, self.params, pid=pid,
                     switchover=mirrors.complete if mirrors else None).send(uri, pause, result)
        except MigrationError as err:
            if mirrors is not None:
                self._abort_mirrors(mirrors, err)
            # When it ran, on this node's clock, for whoever reports the failure.
            err.details.update(started_at=result['started_at'], finished_at=time.time())
            raise
        result['finished_at'] = time.time()
        return result

    def _copy_disks(self, qmp, nbd, tls_params, result):
        """Mirror every copied disk to the target's NBD exports and wait until
        all are in step; the Mirrors (aborted here if this fails)."""
        leftovers = _storage_copy.Mirrors.leftovers(qmp, self.name, self.params)
        if leftovers is not None and leftovers.abort(wait=0):
            raise MigrationError('mirror jobs of an earlier copy migration still run on this QEMU (their NBD'
                                 ' connection hangs); they end once it breaks', instance=self.name, status='failed')
        mirrors = _storage_copy.Mirrors(qmp, self.name, self.params, run=self.run)
        timeout = self.params['timeout']
        try:
            mirrors.start(nbd['host'], nbd, tls_creds=tls_params['tls-creds'] or None,
                          tls_hostname=tls_params['tls-hostname'] or None)
            copy = mirrors.wait_ready(time.monotonic() + timeout if timeout else None,
                                      self.params['stall_timeout'])
        except MigrationError as err:
            self._abort_mirrors(mirrors, err)
            raise
        result['storage'].update(copied_bytes=copy['bytes'], copy_seconds=copy['seconds'])
        return mirrors

    def _abort_mirrors(self, mirrors, err):
        """Cancel the mirror jobs of a failed copy migration; a job still
        ending (its NBD connection hangs) is named in err."""
        if mirrors.aborted:
            return
        running = mirrors.abort()
        if running:
            err.msg += ('; the mirror job%s %s still wait%s on the NBD connection and end once it breaks (the'
                        ' guest runs on meanwhile)' % ('s' if len(running) > 1 else '', ', '.join(running),
                                                       '' if len(running) > 1 else 's'))
            err.details['mirrors_left'] = running

    # -- finalize (target) -------------------------------------------------
    def finalize(self):
        success = self._success()
        with self.locked():
            record, runtime = self.observe()
            if success:
                return self._finalize_success(record, runtime)
            return self._finalize_failure(record, runtime)

    def _success(self):
        success = self.params['success']
        if not isinstance(success, bool):
            raise ValidationError('success (true or false) is required', instance=self.name)
        return success

    def _finalize_success(self, record, runtime):
        if not record['present']:
            raise MigrationError('no incoming QEMU runs here (it is %s); nothing to finalize'
                                 % record['state'], instance=self.name)
        if not record['incoming']:
            if record['run_state'] == 'running':
                return {'state': 'running', 'pid': record['pid']}
            raise StateError('is %s here and not an incoming migration; refusing to finalize'
                             % record['state'], instance=self.name)
        # 'running': resumed by an earlier run cut off before it wrote the runtime
        if record['kind'] not in ('incoming-complete', 'running'):
            raise MigrationError('the incoming migration is not complete here (QEMU run state %s,'
                                 ' migration status %s); finalize with success: false'
                                 % (record['run_state'], record['migration_status']),
                                 instance=self.name)
        actions = self.adopt(record, runtime)
        return {'changed': True, 'actions': actions, 'state': 'running', 'pid': record['pid']}

    def _finalize_failure(self, record, runtime):
        if record['kind'] == 'unknown':
            return self._remove_silent_target(record)
        if record['present'] and record['kind'] not in ('incoming-partial', 'incoming-complete'):
            raise MigrationError('the copy here is %s (run state %s), not an unfinished incoming'
                                 ' migration: it is the guest; refusing to kill it'
                                 % (record['kind'], record['run_state']), instance=self.name)
        if not record['present'] and runtime is not None and not record['incoming']:
            raise MigrationError('the files here are those of a finalized instance, not of an incoming'
                                 ' migration; refusing to remove them', instance=self.name)
        if record['kind'] == 'incoming-complete' and source_gone(self.params.get('peer_status')):
            raise MigrationError('the incoming migration completed here and the source copy is gone (its'
                                 ' status says so): this copy is the only one of the guest; refusing to kill'
                                 ' it (finalize with success: true to run it here)', instance=self.name)
        actions = ['kill'] if record['present'] else ['clean'] if self.instance.leftovers() else []
        if not self.check_mode and actions:
            self.discard(remove_definition=False)
        return {'changed': bool(actions), 'actions': actions, 'target_dead': True, 'state': 'stopped'}

    def _remove_silent_target(self, record):
        """A copy whose monitor did not answer: killed only when it is an
        unfinalized incoming QEMU here and the source's status (peer_status,
        from the other node) shows the migration ended unfinished there."""
        allowed, why = may_kill_silent_target(record, self.params.get('peer_status'))
        if not allowed:
            raise MigrationError('the copy here does not answer (%s) and %s: refusing to kill it, since it may'
                                 ' hold the guest; pass the source\'s status as peer_status, or look at both'
                                 ' nodes and run recover' % (record['error'], why), instance=self.name)
        if not self.check_mode:
            self.discard(remove_definition=False, silent_pid=record['pid'])
        return {'changed': True, 'actions': ['kill'], 'target_dead': True, 'state': 'stopped',
                'silent': True, 'reason': why}

    # -- confirm (source) --------------------------------------------------
    def confirm(self):
        success = self._success()
        with self.locked():
            record, _runtime = self.observe()
            if record['kind'] in ('busy', 'unknown'):
                raise MigrationError('cannot tell what the copy here is: %s' % record['error'],
                                     instance=self.name)
            if success:
                return self._confirm_success(record)
            return self._confirm_failure(record)

    def _confirm_success(self, record):
        if record['present'] and not (record['run_state'] == 'postmigrate' and
                                      record['migration_status'] == 'completed'):
            raise MigrationError('the source copy is %s (run state %s, migration status %s), not migrated'
                                 ' away: the migration did not complete here; refusing to stop it'
                                 % (record['state'], record['run_state'], record['migration_status']),
                                 instance=self.name)
        actions = ['kill'] if record['present'] else ['clean'] if self.instance.leftovers() else []
        if has_definition(self.paths) or has_vnc_password(self.paths):
            actions.append('undefine')
        images = self._copied_images()
        if images:
            actions.append('remove_disks')
        if not self.check_mode and actions:
            self.discard(remove_definition=True)
            _storage_copy.remove_images(images)
        return {'changed': bool(actions), 'actions': actions, 'state': 'absent', 'removed_disks': images}

    def _copied_images(self):
        """The source's images of the guest that a copy migration put on the
        target, when remove_source_disks asks for them to go; those another
        instance here also uses stay (with a warning)."""
        if self.params['storage'] != 'copy' or not self.params['remove_source_disks']:
            return []
        runtime = self.instance.runtime()
        spec = runtime['spec'] if runtime else load_definition(self.paths)
        if not spec:
            return []
        images = []
        for index in _storage_copy.copied(spec):
            path = spec['disks'][index]['path']
            single = dict(spec, disks=[spec['disks'][index]])
            clash = disk_clash(self.layout, self.name, single)
            if clash:
                self.warnings.append('%s stays: %s' % (path, clash))
            elif os.path.isfile(path):
                images.append(path)
        return images

    def _confirm_failure(self, record):
        if not record['present']:
            raise MigrationError('the source copy is gone (%s): nothing to resume here; run status on'
                                 ' both nodes and then recover' % record['state'], instance=self.name)
        if self.params['storage'] == 'copy':
            self.end_mirrors()
        if record['run_state'] == 'running' and record['migration_status'] not in OUTGOING_MIGRATION:
            return {'state': 'running', 'pid': record['pid']}
        if not self.params['target_confirmed_dead']:
            raise MigrationError('refusing to resume the source copy (run state %s, migration status %s)'
                                 ' while the target copy may be alive: run finalize with success: false'
                                 ' on the target first, then pass target_confirmed_dead: true'
                                 % (record['run_state'], record['migration_status']), instance=self.name)
        cancel = record['migration_status'] in OUTGOING_MIGRATION
        actions = (['cancel'] if cancel else []) + ['resume']
        if not self.check_mode:
            with self.instance.monitor() as qmp:
                if cancel:
                    Outgoing(qmp, self.name, self.params).cancel()
                if qmp.execute('query-status')['status'] != 'running':
                    resume(qmp, self.name)
        return {'changed': True, 'actions': actions, 'state': 'running', 'pid': record['pid']}

    # -- status and recover (either) ----------------------------------------
    def status(self):
        record, _runtime = self.observe(busy=flock_held(self.paths.lock, held_locks()))
        return record

    def recover(self):
        role = self.params['role']
        if role not in ROLES:
            raise ValidationError('role must be source or target', instance=self.name)
        peer = self.params['peer_status']
        if not isinstance(peer, dict) or 'present' not in peer:
            raise ValidationError('peer_status must be the status phase\'s result on the other node',
                                  instance=self.name)
        with self.locked():
            local, runtime = self.observe()
            expected = self.params['local_status']
            # An unfinished target whose QEMU has since exited (the source's
            # recover cancelled its migration) is discarded all the same.
            if expected is not None and copy_kind(expected) != local['kind'] and \
                    (copy_kind(expected), local['kind']) != ('incoming-partial', 'absent'):
                raise MigrationError('the copy here changed since status was taken (%s, now %s); take'
                                     ' status on both nodes again' % (copy_kind(expected), local['kind']),
                                     instance=self.name)
            pair = (local, peer) if role == 'source' else (peer, local)
            decision = decide(*pair)
            keep = decision['keep']
            result = {'decision': keep, 'reason': decision['reason'], 'kind': local['kind']}
            if keep == role:
                # A migration no phase watches any more (its migrate phase died)
                # goes on in QEMU: end it, so that it can neither complete after
                # this run nor stay under way.
                cancel = role == 'source' and local['migration_status'] in OUTGOING_MIGRATION
                if cancel and not self.check_mode:
                    with self.instance.monitor() as qmp:
                        if Outgoing(qmp, self.name, self.params).cancel() == 'completed':
                            raise MigrationError('the migration completed while recover was cancelling it;'
                                                 ' take status on both nodes again', instance=self.name)
                    local, runtime = self.observe()
                if role == 'source' and local['present']:
                    self.end_mirrors()
                actions = (['cancel'] if cancel else []) + self.adopt(local, runtime)
                result.update(state='running')
            else:
                actions = ['discard'] if local['present'] or self.instance.leftovers() else []
                remove_definition = keep is not None
                if remove_definition and (local['defined'] or has_vnc_password(self.paths)):
                    actions.append('undefine')
                silent = local['pid'] if local['kind'] == 'unknown' else None
                if not self.check_mode and actions:
                    self.discard(remove_definition=remove_definition, silent_pid=silent)
                result.update(state='absent' if keep is not None else 'stopped', silent=silent is not None)
                if keep is None:
                    self.warnings.append('instance %s runs nowhere: %s' % (self.name, decision['reason']))
        result.update(changed=bool(actions), actions=actions)
        return result
