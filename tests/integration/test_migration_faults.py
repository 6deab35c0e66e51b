"""kvm_migrate under faults, over the two-host lab (tools/lab.py).

Every phase runs through real ansible over SSH on the lab host it names
(kvm-a, kvm-b: network namespaces with their own sshd); the guest's memory
goes over the veth link between them, to the target's kvm_migration_address.
The guest is the test guest of tests/guest under TCG, its disk a file both
namespaces open (they share the filesystem, like shared storage).

After each fault exactly one copy of the guest runs, on the node the module
chose, and its tick counter went on (read from the serial socket in that
host's run_dir, reachable from here: the filesystem is shared), and the other
host has no QEMU and no file of the instance left.

The faults: the link cut mid-migration; the target QEMU killed; a busy
migration port; the controller stopped after each phase, and SIGKILLed
during migrate; the migrate phase's own process killed (QEMU's migration goes
on, orphaned); a guest dirtying memory faster than the bandwidth allows.

One lab for the module; each test uses an instance name of its own, and its
teardown restores the link and kills (continuing stopped ones first) every
QEMU of that instance on both nodes.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import time
import types

import pytest

from tests.harness import REPO, VENV_BIN
from tests.harness.ansible_run import AnsibleResult, ansible_env, run_adhoc
from tests.harness.lab import lab_session
from tests.harness.qemu_procs import qemu_processes_under, serial_lines, wait_until
from tests.harness.raw_qemu import QmpClient
from tests.harness.system import require_binary

from ansible_collections.hvops.kvm.plugins.module_utils._proc import flock_held, parse_locks, read_text

pytestmark = pytest.mark.lab

MIGRATE = 'hvops.kvm.kvm_migrate'
INSTANCE = 'hvops.kvm.kvm_instance'
HOSTS = ('kvm-a', 'kvm-b')
PEER = {'kvm-a': 'kvm-b', 'kvm-b': 'kvm-a'}
TICKS_PER_SECOND = 18.2
PHASES = ('prepare', 'accept', 'migrate', 'finalize', 'confirm')
PLAYBOOK_TIMEOUT = 240
MIGRATE_BOOK = os.path.join(REPO, 'playbooks', 'migrate.yml')
RECOVER_BOOK = os.path.join(REPO, 'playbooks', 'recover.yml')

# A TCP listener for a lab host: binds ADDRESS (port chosen by the kernel),
# prints the port, and exits by itself after LIFETIME seconds.
LISTENER = r'''
import socket, sys, time
server = socket.socket()
server.bind((sys.argv[1], 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
time.sleep(float(sys.argv[2]))
'''


@pytest.fixture(scope='module')
def lab():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)
    with lab_session() as the_lab:
        yield the_lab


@pytest.fixture
def faults(lab, guest_image, tmp_path, request):
    made = Faults(lab, guest_image, str(tmp_path), 'mf-' + request.node.name[5:][:20].replace('_', '-'))
    made.destroy()      # leftovers of an earlier, crashed run under this name
    yield made
    made.destroy()


class Faults:
    """One instance on the lab: playbooks of kvm_migrate phases, and what is
    on each host."""

    def __init__(self, lab, guest_image, workdir, name):
        self.lab = lab
        self.guest_image = guest_image
        self.workdir = workdir
        self.name = name.rstrip('-')
        self.procs = []
        self.count = 0

    # -- what is on a host ---------------------------------------------------
    def run_dir(self, host):
        return self.lab.host(host).run_dir

    def path(self, host, sub, suffix):
        return os.path.join(self.run_dir(host), sub, self.name + suffix)

    def pids(self, host):
        pidfile = self.path(host, 'pid', '.pid')
        return [pid for pid, argv in qemu_processes_under(self.run_dir(host))
                if argv[argv.index('-pidfile') + 1] == pidfile]

    def files(self, host):
        """Files of the instance on host (the lock file aside): under run_dir,
        then under state_dir (as ../RUN_DIR-state/guests/NAME)."""
        found = []
        for sub in ('pid', 'ctrl', 'conf', 'ifup', '../%s-state/guests' % os.path.basename(self.run_dir(host))):
            path = os.path.join(self.run_dir(host), sub)
            if os.path.isdir(path):
                found += [os.path.join(sub, entry) for entry in sorted(os.listdir(path))
                          if entry.startswith(self.name + '.') or entry.startswith(self.name + '-')]
        return found

    def locked(self, host):
        """Whether a phase holds the instance's lock on host."""
        return flock_held(self.path(host, 'lock', '.lock'), parse_locks(read_text('/proc/locks')))

    def lock_holders(self, host):
        """pids holding the instance's lock on host (from /proc/locks)."""
        stat = os.stat(self.path(host, 'lock', '.lock'))
        node = '%02x:%02x:%d' % (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)
        return sorted(int(words[4]) for words in (line.split() for line in read_text('/proc/locks').splitlines())
                      if len(words) > 5 and words[1] == 'FLOCK' and words[5] == node)

    def query_migrate(self, host):
        """query-migrate of the instance's QEMU on host (one short QMP session)."""
        client = QmpClient(self.path(host, 'ctrl', '.qmp'), timeout=5)
        try:
            return client.execute('query-migrate')
        finally:
            client.close()

    def ticks(self, host, count=4):
        lines = serial_lines(self.path(host, 'ctrl', '.serial'), count=count + 2)
        numbers = [int(line.split()[1]) for line in lines if line.startswith('tick ')]
        assert len(numbers) >= count, lines
        assert all(b == a + 1 for a, b in zip(numbers, numbers[1:])), lines
        return numbers

    def assert_only_on(self, host, before, pid=None):
        """Exactly one QEMU of the instance, on host, its counter going on from
        before (the same guest, not a new boot); nothing of it on the other node."""
        other = PEER[host]
        assert self.pids(other) == [], 'a QEMU of %s is left on %s' % (self.name, other)
        assert self.files(other) == [], 'files of %s are left on %s' % (self.name, other)
        pids = self.pids(host)
        assert len(pids) == 1 and (pid is None or pids == [pid]), pids
        after = self.ticks(host)
        assert before[-1] < after[0] <= before[-1] + 120 * TICKS_PER_SECOND, (before, after)
        return after

    def target_migration_status(self, host):
        """query-migrate status of the incoming QEMU on host, None while it has
        no monitor yet (one short QMP session: the phases do not use it then)."""
        if not self.pids(host):
            return None
        try:
            client = QmpClient(self.path(host, 'ctrl', '.qmp'), timeout=2)
        except OSError:
            return None
        try:
            return client.execute('query-migrate').get('status')
        except (OSError, EOFError, RuntimeError):
            return None
        finally:
            client.close()

    def wait_unlocked(self, hosts=HOSTS, timeout=60):
        started = time.monotonic()
        wait_until(lambda: not any(self.locked(host) for host in hosts), timeout, interval=0.05)
        return time.monotonic() - started

    # -- ansible ---------------------------------------------------------------
    def adhoc(self, host, module, args):
        args = dict(args, name=self.name, run_dir=self.run_dir(host))
        done = run_adhoc(self.lab.inventory, module, args, host=host)
        return done.rc, done.result(host=host)

    def start_guest(self, host, variant='normal', memory=32, dirty_mib=None):
        """Boot the test guest on host through kvm_instance; its disk is a file
        every lab host opens. The tick counter it shows."""
        image = self.guest_image(variant, **({'dirty_mib': dirty_mib} if dirty_mib else {}))
        rc, started = self.adhoc(host, INSTANCE, {
            'memory': memory, 'accel': 'tcg', 'machine': 'pc', 'state': 'started',
            'disks': [{'path': image, 'interface': 'ide'}]})
        assert rc == 0 and started['state'] == 'running', started
        return self.ticks(host)

    def task(self, name, host, args, register, **extra):
        args = dict(args, name=self.name, run_dir='{{ kvm_run_dir }}', state_dir='{{ kvm_state_dir }}')
        return {'name': 'play ' + name, 'hosts': host, 'gather_facts': False,
                'tasks': [dict({'name': name, MIGRATE: args, 'register': register}, **extra)]}

    def phase_plays(self, source, target, phases=PHASES, accept=None, migrate=None, uri=None):
        """One play per phase, each on its host, each passing its result on (as
        the module's EXAMPLES do); a failed migrate is finalized and confirmed
        as a failure. ``uri``: the accept phase's, when it ran in an earlier run."""
        src, dst = repr(source), repr(target)
        plays = {
            'prepare': lambda: self.task('prepare', source, {'phase': 'prepare'}, 'prepared'),
            'accept': lambda: self.task('accept', target, dict({
                'phase': 'accept',
                'runtime': '{{ hostvars[%s].prepared.runtime }}' % src,
                'definition': '{{ hostvars[%s].prepared.definition }}' % src,
                'policy': '{{ hostvars[%s].prepared.policy | default(omit, true) }}' % src,
                'migration_address': '{{ kvm_migration_address }}'}, **(accept or {})), 'accepted'),
            'migrate': lambda: self.task('migrate', source, dict({
                'phase': 'migrate', 'uri': uri or '{{ hostvars[%s].accepted.uri }}' % dst},
                **(migrate or {})), 'migrated', ignore_errors=True),
            'finalize': lambda: self.task('finalize', target, {
                'phase': 'finalize', 'success': '{{ hostvars[%s].migrated is succeeded }}' % src},
                'finalized'),
            'confirm': lambda: self.task('confirm', source, {
                'phase': 'confirm', 'success': '{{ hostvars[%s].migrated is succeeded }}' % src,
                'target_confirmed_dead': '{{ hostvars[%s].finalized.target_dead | default(false) }}' % dst},
                'confirmed'),
        }
        return [plays[phase]() for phase in phases]

    def recover_plays(self, source, target, one_by_one=False):
        """status on both nodes, then recover on each with the other's status
        (as tests/integration/playbooks/kvm_migrate_recover.yml); one_by_one:
        recover on the source first, then on the target."""
        base = {'name': self.name, 'run_dir': '{{ kvm_run_dir }}', 'state_dir': '{{ kvm_state_dir }}'}
        both = '%s:%s' % (source, target)
        status = {'name': 'status', 'hosts': both, 'gather_facts': False, 'tasks': [
            {'name': 'status', MIGRATE: dict(base, phase='status'), 'register': 'seen'}]}
        recover = {'name': 'recover', 'hosts': both, 'gather_facts': False,
                   'vars': {'migration_roles': {source: 'source', target: 'target'}, 'peers': PEER},
                   'tasks': [{'name': 'recover', MIGRATE: dict(
                       base, phase='recover', role='{{ migration_roles[inventory_hostname] }}',
                       local_status='{{ seen }}', peer_status='{{ hostvars[peers[inventory_hostname]].seen }}'),
                       'register': 'recovered'}]}
        if one_by_one:
            recover.update(serial=1, order='sorted' if source < target else 'reverse_sorted')
        return [status, recover]

    def write_playbook(self, plays):
        self.count += 1
        path = os.path.join(self.workdir, 'play%d.json' % self.count)
        with open(path, 'w') as handle:
            json.dump(plays, handle, indent=1)
        return path

    def start_playbook(self, plays):
        """ansible-playbook running in the background, in a session of its own
        (so that it and every process it forks can be killed at once)."""
        argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', self.lab.inventory, self.write_playbook(plays)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ansible_env(), start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_book(self, book, source, target, **role_vars):
        """playbooks/migrate.yml or recover.yml (the hvops.kvm.migrate role) in
        the background, as start_playbook."""
        extra = dict({'instance': self.name, 'source': source, 'target': target}, **role_vars)
        argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', self.lab.inventory, book, '-e', json.dumps(extra)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ansible_env(), start_new_session=True)
        self.procs.append(proc)
        return proc

    def book(self, book, source, target, **role_vars):
        return self.finish(self.start_book(book, source, target, **role_vars), wrap=RoleRun)

    @staticmethod
    def finish(proc, timeout=PLAYBOOK_TIMEOUT, wrap=None):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise AssertionError('ansible-playbook still ran after %s s:\n%s' % (timeout, stderr[-2000:])) from None
        result = AnsibleResult(types.SimpleNamespace(returncode=proc.returncode, stdout=stdout, stderr=stderr))
        return wrap(result) if wrap else Run(result)

    def playbook(self, plays):
        return self.finish(self.start_playbook(plays))

    # -- teardown ----------------------------------------------------------------
    def destroy(self):
        self.lab.restore_link()
        for proc in self.procs:     # each the leader of a session of its own
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        self.procs = []
        for host in HOSTS:
            for pid in self.pids(host):
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
        for host in HOSTS:
            wait_until(lambda host=host: not self.pids(host), 10)
            for entry in self.files(host) + ['lock/%s.lock' % self.name]:
                try:
                    os.unlink(os.path.join(self.run_dir(host), entry))
                except FileNotFoundError:
                    pass


class Run:
    """Results of one ansible-playbook run, by task name and host."""

    def __init__(self, result):
        self.result = result
        self.rc = result.rc
        self.by_task = {}
        for host in HOSTS:
            for name, data in result.tasks(host):
                self.by_task[(name, host)] = data

    def __getitem__(self, key):
        assert key in self.by_task, 'no result of %s on %s: %r' % (key + (self,))
        return self.by_task[key]

    def __repr__(self):
        shown = dict((key, dict((k, v) for k, v in data.items()
                                if k in ('msg', 'failed', 'changed', 'actions', 'state', 'kind', 'decision',
                                         'status', 'reason', 'migration_status', 'busy')))
                     for key, data in self.by_task.items())
        return 'Run(rc=%d, %r, stderr=%r)' % (self.rc, shown, self.result.stderr[-2000:])


class RoleRun:
    """Results of one run of playbooks/migrate.yml or recover.yml (every task
    runs on localhost, the phases delegated to their node)."""

    def __init__(self, result):
        self.result = result
        self.rc = result.rc
        self.tasks = result.tasks()

    def task(self, prefix):
        """The last result of the task whose name starts with prefix."""
        found = [res for name, res in self.tasks if name.split(' : ', 1)[-1].startswith(prefix)]
        assert found, (prefix, [name for name, _res in self.tasks])
        return found[-1]

    def fact(self, key):
        found = [res['ansible_facts'][key] for _name, res in self.tasks if key in res.get('ansible_facts', {})]
        assert found, self
        return found[-1]

    def __repr__(self):
        keys = ('msg', 'failed', 'changed', 'actions', 'state', 'kind', 'status', 'skipped')
        shown = [(name, dict((k, v) for k, v in res.items() if k in keys)) for name, res in self.tasks]
        return 'RoleRun(rc=%d, %r, stderr=%r)' % (self.rc, shown, self.result.stderr[-2000:])


def assert_recovered(run, source, target, keep):
    """Both nodes decided alike, for ``keep``; return (source's, target's) recover results."""
    assert run.rc == 0, run
    done = run['recover', source], run['recover', target]
    assert done[0]['decision'] == done[1]['decision'] == keep, done
    return done


# -- the link cut and the target killed mid-migration ---------------------------------------------
def migrate_with_fault(faults, fault, migrate):
    """A dirty guest on kvm-a, prepared and accepted on kvm-b; then one run of
    migrate, finalize and confirm during which fault() strikes once the
    incoming migration is under way. (run, seconds from the fault to the end of
    the migrate phase, ticks before, the accept phase's result)."""
    before = faults.start_guest('kvm-a', 'dirty', memory=64, dirty_mib=48)
    accepted = faults.playbook(faults.phase_plays('kvm-a', 'kvm-b', ('prepare', 'accept')))
    assert accepted.rc == 0, accepted
    accepted = accepted['accept', 'kvm-b']
    assert accepted['uri'] == 'tcp:%s:%d' % (faults.lab.host('kvm-b').address, accepted['port'])
    proc = faults.start_playbook(faults.phase_plays('kvm-a', 'kvm-b', ('migrate', 'finalize', 'confirm'),
                                                    migrate=migrate, uri=accepted['uri']))
    wait_until(lambda: faults.target_migration_status('kvm-b') == 'active', 60, interval=0.1)
    wait_until(lambda: faults.locked('kvm-a'), 10)
    time.sleep(1.0)     # a second of memory over the link
    assert proc.poll() is None and faults.pids('kvm-b') == [accepted['pid']]
    fault(accepted)
    struck = time.monotonic()
    # The migrate phase holds the source's lock until it returns.
    wait_until(lambda: not faults.locked('kvm-a'), 60, interval=0.02)
    ended_after = time.monotonic() - struck
    return faults.finish(proc), ended_after, before, accepted


def test_link_cut_mid_migration_cancels_and_the_guest_stays_on_the_source(faults):
    lab = faults.lab
    run, ended_after, before, _accepted = migrate_with_fault(
        faults, lambda _accepted: lab.cut_link(),
        {'max_bandwidth_mib': 8, 'stall_timeout': 2, 'timeout': 120})
    try:
        assert run.rc == 0, run       # migrate failed (ignored); finalize and confirm worked
        migrated = run['migrate', 'kvm-a']
        assert migrated.get('failed') and 'no progress for 2 s' in migrated['msg'], migrated
        # migrate_cancel shuts the socket down; QEMU's blocked write may see that first.
        assert migrated['reason'] == 'stalled' and migrated['status'] in ('cancelled', 'failed'), migrated
        assert migrated['source_run_state'] == 'running'
        assert migrated['stats']['transferred_bytes'] > 0
        # The stall detector needed the stall timeout plus what the socket buffers took.
        assert 2 <= ended_after < 15, ended_after
        finalized, confirmed = run['finalize', 'kvm-b'], run['confirm', 'kvm-a']
        # The target never got the whole guest: it was still waiting, and was killed.
        assert finalized['target_dead'] is True and finalized['actions'] == ['kill'], finalized
        assert confirmed['invocation']['module_args']['target_confirmed_dead'] is True
        assert confirmed['state'] == 'running' and confirmed['changed'] is False, confirmed
        assert lab.link_state('kvm-a') == 'down'
    finally:
        lab.restore_link()
    faults.assert_only_on('kvm-a', before)
    print('\nlink cut: migrate phase returned %.1f s after the cut (stall_timeout 2), %s bytes sent, QEMU'
          ' status %s' % (ended_after, migrated['stats']['transferred_bytes'], migrated['status']))


def test_target_killed_mid_migration_leaves_the_guest_on_the_source(faults):
    def kill_target(accepted):
        killed = faults.lab.run('kvm-b', ['kill', '-KILL', str(accepted['pid'])])
        assert killed.returncode == 0, killed.stderr

    run, ended_after, before, _accepted = migrate_with_fault(
        faults, kill_target, {'max_bandwidth_mib': 8, 'stall_timeout': 5, 'timeout': 120})
    assert run.rc == 0, run
    migrated = run['migrate', 'kvm-a']
    assert migrated.get('failed') and 'QEMU reports it failed' in migrated['msg'], migrated
    assert migrated['status'] == migrated['reason'] == 'failed'
    assert migrated['source_run_state'] == 'running'
    assert ended_after < 5, ended_after    # the broken connection, not the stall detector
    finalized, confirmed = run['finalize', 'kvm-b'], run['confirm', 'kvm-a']
    # Killed, the target QEMU left its pidfile and sockets: finalize cleans them up.
    assert finalized['target_dead'] is True and finalized['actions'] == ['clean'], finalized
    assert confirmed['state'] == 'running' and confirmed['changed'] is False, confirmed
    faults.assert_only_on('kvm-a', before)
    print('\ntarget killed: migrate phase returned %.2f s after the kill: %s'
          % (ended_after, migrated['stats']['error']))


# -- a busy port ----------------------------------------------------------------------------------
def test_a_busy_migration_port_on_the_target_is_skipped(faults):
    lab = faults.lab
    address = lab.host('kvm-b').address
    listener = lab.popen('kvm-b', [lab.python, '-c', LISTENER, address, '120'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    faults.procs.append(listener)
    assert select.select([listener.stdout], [], [], 10)[0], 'the listener did not start'
    busy = int(listener.stdout.readline())
    before = faults.start_guest('kvm-a')

    run = faults.playbook(faults.phase_plays('kvm-a', 'kvm-b', accept={
        'migration_ports': '%d-%d' % (busy, busy + 3)}))
    assert run.rc == 0, run
    accepted, migrated = run['accept', 'kvm-b'], run['migrate', 'kvm-a']
    assert accepted['busy_ports'] == [busy] and accepted['port'] == busy + 1, accepted
    assert accepted['uri'] == 'tcp:%s:%d' % (address, busy + 1)
    assert migrated['status'] == 'completed' and migrated['uri'] == accepted['uri'], migrated
    assert run['finalize', 'kvm-b']['state'] == 'running'
    assert run['confirm', 'kvm-a']['actions'] == ['kill', 'undefine']
    assert listener.poll() is None      # still listening: untouched
    faults.assert_only_on('kvm-b', before, pid=accepted['pid'])
    stats = migrated['stats']
    print('\nbusy port %d skipped; migration over the lab link: %s ms, downtime %s ms, %s bytes'
          % (busy, stats['total_time_ms'], stats['downtime_ms'], stats['transferred_bytes']))


# -- the controller gone between phases -------------------------------------------------------------
def test_controller_stopped_after_each_phase_then_recover_keeps_one_copy(faults):
    """The run stops after phase k (as when the controller dies there); status
    on both nodes and recover on each keep exactly one copy."""
    ticks = faults.start_guest('kvm-a')
    cases = [
        # (source, target, last phase run, copy the target shows, decision, actions on source, on target)
        ('kvm-a', 'kvm-b', 'prepare', 'absent', 'source', [], []),
        ('kvm-a', 'kvm-b', 'accept', 'incoming-partial', 'source', [], ['discard']),
        ('kvm-a', 'kvm-b', 'migrate', 'incoming-complete', 'target',
         ['discard', 'undefine'], ['define', 'write_runtime', 'resume']),
        # Now the guest lives on kvm-b: back to kvm-a, stopped after finalize.
        ('kvm-b', 'kvm-a', 'finalize', 'running', 'target', ['discard', 'undefine'], []),
    ]
    for source, target, last, target_copy, keep, source_actions, target_actions in cases:
        phases = PHASES[:PHASES.index(last) + 1]
        stopped = faults.playbook(faults.phase_plays(source, target, phases))
        assert stopped.rc == 0, stopped
        if 'migrate' in phases:
            assert stopped['migrate', source]['status'] == 'completed'
        run = faults.playbook(faults.recover_plays(source, target))
        on_source, on_target = assert_recovered(run, source, target, keep)
        assert run['status', target]['kind'] == target_copy, (last, run['status', target])
        assert on_source['actions'] == source_actions and on_target['actions'] == target_actions, \
            (last, on_source, on_target)
        ticks = faults.assert_only_on(source if keep == 'source' else target, ticks)


def test_controller_killed_during_migrate_then_recover_keeps_one_copy(faults):
    """ansible-playbook, running the phases, is SIGKILLed (with every process
    it forked) once the target QEMU receives the guest. The migrate phase on
    the source goes on without it; recover then keeps the copy the decision
    table names."""
    before = faults.start_guest('kvm-a', 'dirty', memory=48, dirty_mib=16)
    # Converges after the first pass (16 MiB left over fit the downtime limit
    # at 8 MiB/s), some seconds after the target started receiving.
    proc = faults.start_playbook(faults.phase_plays('kvm-a', 'kvm-b', migrate={
        'max_bandwidth_mib': 8, 'downtime_limit_ms': 2500, 'stall_timeout': 10, 'timeout': 60}))
    wait_until(lambda: faults.target_migration_status('kvm-b') == 'active', 90, interval=0.1)
    assert proc.poll() is None and faults.locked('kvm-a'), 'the migrate phase is not running'
    os.killpg(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.communicate(timeout=30)
    remote_phase_s = faults.wait_unlocked()

    run = faults.playbook(faults.recover_plays('kvm-a', 'kvm-b'))
    source_status, target_status = run['status', 'kvm-a'], run['status', 'kvm-b']
    completed = source_status['migration_status'] == 'completed'
    keep = 'target' if completed else 'source'
    on_source, on_target = assert_recovered(run, 'kvm-a', 'kvm-b', keep)
    if completed:
        assert (source_status['kind'], target_status['kind']) == ('paused', 'incoming-complete')
        assert on_target['actions'] == ['define', 'write_runtime', 'resume']
        assert on_source['actions'] == ['discard', 'undefine']
        faults.assert_only_on('kvm-b', before)
    else:
        assert source_status['kind'] == 'running'
        faults.assert_only_on('kvm-a', before)
    print('\ncontroller SIGKILLed during migrate: the migrate phase on the source ran on for %.1f s'
          ' (%.1f s after the kill) and the migration %s; recover kept the %s copy'
          % (remote_phase_s, time.monotonic() - killed, 'completed' if completed else
             'ended as %s' % source_status['migration_status'], keep))


def test_migrate_phase_killed_leaves_a_migration_that_recover_cancels(faults):
    """The migrate phase's own process dies on the source (SIGKILL, as the OOM
    killer would) while QEMU migrates: QEMU's migration goes on without it.
    recover keeps the source: it cancels that migration first, so that it can
    neither complete later nor stay under way; the target, whose QEMU ended
    with it, is cleaned up."""
    before = faults.start_guest('kvm-a', 'dirty', memory=64, dirty_mib=48)
    proc = faults.start_playbook(faults.phase_plays('kvm-a', 'kvm-b', ('prepare', 'accept', 'migrate'), migrate={
        'max_bandwidth_mib': 8, 'stall_timeout': 30, 'timeout': 120}))
    wait_until(lambda: faults.target_migration_status('kvm-b') == 'active', 90, interval=0.1)
    holders = wait_until(lambda: faults.lock_holders('kvm-a'), 10)
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    run = faults.finish(proc)
    assert run.rc == 0 and run['migrate', 'kvm-a'].get('failed'), run
    faults.wait_unlocked(timeout=10)
    assert faults.query_migrate('kvm-a')['status'] == 'active'     # no one watches it now

    run = faults.playbook(faults.recover_plays('kvm-a', 'kvm-b', one_by_one=True))
    assert run['status', 'kvm-a']['kind'] == 'running' and run['status', 'kvm-a']['migration_status'] == 'active'
    assert run['status', 'kvm-b']['kind'] == 'incoming-partial'
    on_source, on_target = assert_recovered(run, 'kvm-a', 'kvm-b', 'source')
    assert on_source['actions'] == ['cancel'] and on_source['state'] == 'running', on_source
    # The cancelled migration ended the target's QEMU: only its files were left.
    assert on_target['actions'] == ['discard'] and on_target['kind'] == 'absent', on_target
    # QEMU says cancelled, or failed when the target's end of the stream closed
    # before the cancel had torn it down (a race inside QEMU): either way it
    # ended without completing, and nothing watches it any more.
    assert faults.query_migrate('kvm-a')['status'] in ('cancelled', 'failed')
    faults.assert_only_on('kvm-a', before)


# -- a guest dirtying memory faster than the bandwidth ---------------------------------------------
def test_a_guest_dirtying_faster_than_the_bandwidth_converges_or_is_cancelled(faults):
    before = faults.start_guest('kvm-a', 'dirty', memory=32, dirty_mib=16)
    run = faults.playbook(faults.phase_plays('kvm-a', 'kvm-b', migrate={
        'auto_converge': True, 'throttle_initial': 50, 'throttle_increment': 20, 'max_bandwidth_mib': 8,
        'stall_timeout': 5, 'timeout': 12}))
    assert run.rc == 0, run
    migrated = run['migrate', 'kvm-a']
    assert migrated['invocation']['module_args']['auto_converge'] is True
    if migrated.get('failed'):
        # Not converged: cancelled at the timeout, the guest still runs on the source.
        assert migrated['reason'] == 'timeout' and migrated['status'] == 'cancelled', migrated
        assert 'not done within the timeout of 12 s' in migrated['msg']
        assert migrated['source_run_state'] == 'running'
        assert migrated['stats']['cpu_throttle_percentage'] >= 50, migrated['stats']    # it did throttle
        assert run['finalize', 'kvm-b']['target_dead'] is True
        assert run['confirm', 'kvm-a']['state'] == 'running'
        faults.assert_only_on('kvm-a', before)
        outcome = 'cancelled at the timeout, throttled to %s %%, %s passes, %s MiB/s dirtied' % (
            migrated['stats']['cpu_throttle_percentage'], migrated['stats']['passes'],
            migrated['stats']['dirty_rate_mib_s'])
    else:
        assert migrated['status'] == 'completed', migrated
        assert run['finalize', 'kvm-b']['state'] == 'running'
        assert run['confirm', 'kvm-a']['actions'] == ['kill', 'undefine']
        faults.assert_only_on('kvm-b', before)
        outcome = 'converged in %s ms (%s passes, downtime %s ms)' % (
            migrated['stats']['total_time_ms'], migrated['stats']['passes'], migrated['stats']['downtime_ms'])
    print('\n16 MiB dirtied at 8 MiB/s with auto-converge: %s' % outcome)


# -- frozen QEMUs, through the migrate role (playbooks/migrate.yml) ----------------------------------
# Cleartext: the faults are those of the QEMUs, not of TLS (tests/integration/test_migration_tls.py).
ROLE_VARS = {'migrate_tls': False, 'migrate_max_bandwidth_mib': 8, 'migrate_stall_timeout': 2,
             'migrate_timeout': 120}


def role_with_fault(faults, fault, **role_vars):
    """A dirty guest on kvm-a; playbooks/migrate.yml to kvm-b, during which
    fault(target pid) strikes a second after the incoming migration is under
    way. (RoleRun, ticks before, the target QEMU's pid)."""
    before = faults.start_guest('kvm-a', 'dirty', memory=64, dirty_mib=48)
    proc = faults.start_book(MIGRATE_BOOK, 'kvm-a', 'kvm-b', **dict(ROLE_VARS, **role_vars))
    wait_until(lambda: faults.target_migration_status('kvm-b') == 'active', 90, interval=0.1)
    time.sleep(1.0)     # a second of memory over the link
    pids = faults.pids('kvm-b')
    assert proc.poll() is None and len(pids) == 1, pids
    fault(pids[0])
    return faults.finish(proc, wrap=RoleRun), before, pids[0]


def test_frozen_target_is_removed_and_the_guest_runs_on_the_source(faults):
    """The target QEMU SIGSTOPped mid-migration: its monitor is silent. The
    stall detector cancels; the source's own evidence (its migration cancelled,
    its copy running) lets the rollback kill the frozen incoming copy."""
    struck = []

    def freeze(pid):
        os.kill(pid, signal.SIGSTOP)
        struck.append(time.monotonic())

    run, before, frozen = role_with_fault(faults, freeze)
    took = time.monotonic() - struck[0]
    result = run.fact('migrate_result')
    assert run.rc != 0 and result['failed'] is True, run
    message = result['message']
    print('\n' + message)
    assert 'no progress for 2 s' in message, message
    assert result['rolled_back'] is True and result['runs_on'] == 'kvm-a', result
    assert 'NOT resumed' not in message, message
    rollback = run.task('Roll back on the target')
    assert rollback['actions'] == ['kill'] and rollback['target_dead'] is True, rollback
    assert 'the incoming copy on kvm-b, whose QEMU did not answer, was killed' in message, message
    assert message.endswith('%s runs on kvm-a (pid %s).' % (faults.name, result['pid'])), message
    faults.assert_only_on('kvm-a', before)
    assert not os.path.exists('/proc/%d/cmdline' % frozen) or open('/proc/%d/cmdline' % frozen).read() == ''
    print('\nfrozen target: the role ended %.1f s after the SIGSTOP: %s' % (took, message))


def test_frozen_source_leaves_the_guest_on_the_source_once_it_continues(faults):
    """The source QEMU SIGSTOPped mid-migration: the migrate phase's monitor
    times out; the target, still receiving, is removed; the source cannot be
    resumed while it is stopped, and the message says so. Continued, QEMU
    fails its migration (the target is gone) and goes on with the guest;
    recover then finds it running on the source and changes nothing."""
    frozen = []

    def freeze(_target_pid):
        pid, = faults.pids('kvm-a')
        os.kill(pid, signal.SIGSTOP)
        frozen.append((pid, time.monotonic()))

    run, before, _target = role_with_fault(faults, freeze)
    source, struck = frozen[0]
    took = time.monotonic() - struck
    result = run.fact('migrate_result')
    message = result['message']
    print('\n' + message)
    assert run.rc != 0 and result['failed'] is True and result['rolled_back'] is False, run
    # Meanwhile: the target copy is gone, the guest runs nowhere (its QEMU is stopped), and the message says so.
    # The migrate phase saw the source QEMU stopped; the status before the rollback too.
    assert 'the source QEMU (pid %d) stopped answering during the migration' % source in message, message
    assert 'kill the target QEMU' not in message, message
    assert 'does not answer (QEMU pid %d is stopped' % source in message, message
    assert result['runs_on'] is None and 'the guest runs nowhere until that QEMU answers again' in message
    assert run.task('Roll back on the target')['target_dead'] is True
    assert faults.pids('kvm-b') == [] and faults.files('kvm-b') == []
    assert faults.pids('kvm-a') == [source] and open('/proc/%d/stat' % source).read().rsplit(')', 1)[1].split()[0] == 'T'

    os.kill(source, signal.SIGCONT)
    continued = time.monotonic()
    wait_until(lambda: faults.query_migrate('kvm-a')['status'] in ('failed', 'cancelled'), 30, interval=0.05)
    ended = time.monotonic() - continued
    recovered = faults.book(RECOVER_BOOK, 'kvm-a', 'kvm-b')
    assert recovered.rc == 0, recovered
    outcome = recovered.fact('migrate_recover_result')
    assert outcome['decision'] == 'source' and outcome['changed'] is False, outcome
    assert outcome['hosts']['source']['kind'] == 'running' and outcome['hosts']['target']['kind'] == 'absent'
    faults.assert_only_on('kvm-a', before, pid=source)
    print('frozen source: the role ended %.1f s after the SIGSTOP; continued, QEMU ended its migration %.2f s'
          ' later as %s' % (took, ended, faults.query_migrate('kvm-a')['status']))


def test_target_host_rebooting_mid_migration_leaves_the_guest_on_the_source(faults):
    """The target host reboots mid-migration, as far as the guest can tell:
    every QEMU of its run_dir SIGKILLed, and the run_dir gone (a tmpfs, as
    /run is). The migration fails, the guest runs on on the source, the
    rollback finds nothing on the target and leaves nothing there."""
    run_dir = faults.run_dir('kvm-b')

    def reboot(_target_pid):
        for pid, _argv in qemu_processes_under(run_dir):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not qemu_processes_under(run_dir), 10, interval=0.01)
        shutil.rmtree(run_dir)

    run, before, _target = role_with_fault(faults, reboot)
    result = run.fact('migrate_result')
    message = result['message']
    print('\n' + message)
    assert run.rc != 0 and result['failed'] is True, run
    assert 'QEMU reports it failed' in message, message
    assert result['rolled_back'] is True and result['runs_on'] == 'kvm-a', result
    assert message.endswith('Rolled back: nothing was left on kvm-b, and %s runs on kvm-a (pid %s).'
                            % (faults.name, result['pid'])), message
    faults.assert_only_on('kvm-a', before, pid=result['pid'])
