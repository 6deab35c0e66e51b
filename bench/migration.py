"""Live migration: kvm_migrate's migrate phase against the link's practical
limit and against the seed's way, completion latency, downtime, and the five
phases through Ansible.

Two simulated hosts on this machine (two run_dirs, loopback), guests under TCG
booting the test guest of tests/guest. What is measured, each side by side in
the same rounds (the order changing from round to round), as ratios:

* wall time of the migrate phase for guests of 256 MiB, 512 MiB and 1 GiB whose
  RAM holds random data, done four ways:
  - ``raw``: a minimal QMP script on a plain unix socket setting the same
    capabilities and parameters as the library, ``migrate``, then waiting for
    the ``MIGRATION`` completed event: the practical limit of the link;
  - ``library``: ``_migration.run_phase(phase=migrate)`` in-process;
  - ``ansible``: the module through ``ansible HOST -m hvops.kvm.kvm_migrate``;
  - ``seed``: the way of Ganeti's hv_kvm.py (the project's behaviour
    reference): human monitor ``migrate -d`` with QEMU's default parameters
    (max-bandwidth 128 MiB/s) and ``info migrate`` polled every 2 s (through
    ``human-monitor-command``);
* completion latency: from QEMU's completion event (its own timestamp) to the
  phase returning;
* downtime QEMU reports for idle guests and for the RAM-rewriting test guest
  (``dirty`` variant), against the configured downtime limit;
* a whole migration through ``playbooks/migrate.yml`` (the migrate role),
  Ansible's own cost per task split from the library's work, against the
  same phases in-process and against the playbook of the collection before
  its migrate role was made lean (unpacked from git, run in the same rounds),
  one guest migrating back and forth.

Random RAM: the source QEMU gets ``-object memory-backend-file,...,
mem-path=/dev/shm/FILE,share=off,prealloc=on -machine memory-backend=ram0``
over a file filled once from os.urandom. The spec's ``extra_args`` say
``memory-backend-ram`` (extra_args may name no host file, so the library
refuses the file backend); only while the source starts does the benchmark
swap the file backend into the argv the library builds (``ram_from_file``);
``prealloc`` copies the file into the guest's private, anonymous memory at
start, so the guest's RAM is ordinary populated memory whose every page is
non-zero and incompressible (QEMU sends all of it; zero pages would cost
nothing). The guest itself is the idle test guest. The target gets
``memory-backend-ram`` of the same id with ``prealloc=on``, touched at accept
(untimed): this machine is a VM whose memory its hypervisor backs lazily
(virtio-balloon free page reporting), so RAM a fresh target QEMU faults in
costs a host-side fault per page, and the same migration took 0.4 s or 1.7 s
depending on which pages the target got. Preallocating takes that out of what
is compared; one case leaves it in, to show what it costs here.
"""

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt, fmt_ratio, fmt_summary

from ansible_collections.hvops.kvm.plugins.module_utils import _instance, _migration
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._migration_settings import (
    DEFAULTS, capabilities, parameters)
from ansible_collections.hvops.kvm.plugins.module_utils._migration_stats import extract_stats
from ansible_collections.hvops.kvm.plugins.module_utils._reconcile import run_task

NAME = 'migration'
TITLE = 'Live migration (kvm_migrate)'
GUEST = 'vm'
MIB = 1024 * 1024
METHODS = ('raw', 'library', 'ansible', 'seed')
LABELS = {
    'raw': 'raw QMP script',
    'library': 'migrate phase, in-process',
    'ansible': 'migrate phase via ansible',
    'seed': 'seed: migrate -d, defaults, 2 s poll',
}
SEED_POLL = 2.0
SEED_STATUS = re.compile(r'Migration\s+status:\s+(\S+)')
QEMU_DEFAULT_BANDWIDTH = 128 * MIB
PHASES = ('prepare', 'accept', 'migrate', 'finalize', 'confirm')


@contextlib.contextmanager
def ram_from_file(path):
    """While it lasts, the library's argv reads guest RAM backend ram0 from
    path (a benchmark's shortcut to incompressible guest RAM: the spec keeps
    memory-backend-ram, which is what a target gets)."""
    original = _instance.build_argv
    pattern = re.compile(r'memory-backend-ram,id=ram0,size=(\d+M)')

    def build(*args, **kwargs):
        return [pattern.sub(r'memory-backend-file,id=ram0,size=\1,mem-path=%s,share=off,prealloc=on' % path, word)
                for word in original(*args, **kwargs)]
    _instance.build_argv = build
    try:
        yield
    finally:
        _instance.build_argv = original


# -- two hosts on this machine ---------------------------------------------------
class Lab:
    """Hosts a and b: two run_dirs under one short /tmp path, one shared disk
    (the test guest image), an inventory for ansible, a file of random bytes
    in /dev/shm for guests' RAM."""

    def __init__(self):
        from tests.harness.guest import build_image
        self.base = tempfile.mkdtemp(prefix='hkb-mig-', dir='/tmp')
        os.chmod(self.base, 0o711)    # the QEMU user reaches its pidfiles and the disk
        self.run_dirs = {'a': os.path.join(self.base, 'a'), 'b': os.path.join(self.base, 'b')}
        self.images = {}
        self.build_image = build_image
        self.inventory = os.path.join(self.base, 'hosts.ini')
        with open(self.inventory, 'w') as handle:
            python = os.path.join(common.VENV_BIN, 'python')
            # migrate_tls=false (below): the playbook is compared with the same
            # phases in-process, which run without TLS (bench.migration_tls measures TLS).
            for host in ('a', 'b'):
                handle.write('%s ansible_connection=local ansible_python_interpreter=%s run_dir=%s kvm_run_dir=%s'
                             ' state_dir=%s kvm_state_dir=%s kvm_migration_address=127.0.0.1\n'
                             % (host, python, self.run_dirs[host], self.run_dirs[host],
                                self.run_dirs[host] + '-state', self.run_dirs[host] + '-state'))
            # The role runs for the play host: its migrate_tls counts.
            handle.write('localhost ansible_connection=local ansible_python_interpreter=%s migrate_tls=false\n'
                         % python)
        self.ram_file = None
        self.ram_file_mib = 0

    def disk(self, variant='normal', dirty_mib=64):
        """A copy of the test guest image both nodes see (shared storage)."""
        key = (variant, dirty_mib)
        if key not in self.images:
            path = os.path.join(self.base, 'disk-%s%s.img' % (variant, dirty_mib if variant == 'dirty' else ''))
            shutil.copyfile(self.build_image(variant, dirty_mib=dirty_mib), path)
            common.give_to_qemu(path)
            self.images[key] = path
        return self.images[key]

    def random_ram(self, mib):
        """Path of a /dev/shm file of at least ``mib`` MiB of random bytes."""
        if self.ram_file_mib < mib:
            if self.ram_file is None:
                self.ram_file = '/dev/shm/%s.ram' % os.path.basename(self.base)
            with open(self.ram_file, 'wb') as handle:
                for _chunk in range(mib // 16):
                    handle.write(os.urandom(16 * MIB))
            self.ram_file_mib = mib
        return self.ram_file

    def layout(self, host):
        return NodeLayout(self.run_dirs[host], self.run_dirs[host] + '-state')

    def instance(self, host):
        return Instance(self.layout(host), GUEST, common.run)

    def start(self, host, memory, random=True, variant='normal', dirty_mib=64, disks=None):
        """Start the guest on host through kvm_instance's library; random RAM
        by default; ``disks`` instead of the test guest image alone."""
        extra = []
        if random:
            extra = ['-object', 'memory-backend-ram,id=ram0,size=%dM' % memory, '-machine', 'memory-backend=ram0']
        params = {'name': GUEST, 'run_dir': self.run_dirs[host], 'state_dir': self.run_dirs[host] + '-state',
                  'state': 'started', 'memory': memory,
                  'accel': 'tcg', 'machine': 'pc', 'serial_console': True, 'extra_args': extra,
                  'disks': disks or [{'path': self.disk(variant, dirty_mib), 'interface': 'ide'}],
                  'monitor_timeout': 10.0, 'lock_timeout': 60, 'stop_mode': 'kill', 'force': True,
                  'shutdown_timeout': 5}
        if random:
            with ram_from_file(self.random_ram(memory)):
                result, _diff = run_task(params, common.run)
        else:
            result, _diff = run_task(params, common.run)
        assert result['state'] == 'running', result
        return result

    def phase(self, host, phase, **args):
        params = dict(args, phase=phase, name=GUEST, run_dir=self.run_dirs[host],
                      state_dir=self.run_dirs[host] + '-state', monitor_timeout=10.0)
        return _migration.run_phase(params, common.run)

    def accept(self, target, prepared, prealloc=True, **args):
        """accept on target with the source's runtime; a target of a guest with
        random RAM gets its memory-backend-ram preallocated unless told
        otherwise (see main's docstring)."""
        runtime = dict(prepared['runtime'])
        spec = dict(runtime['spec'])
        extra = list(spec.get('extra_args') or [])
        for index, word in enumerate(extra):
            if word.startswith('memory-backend-ram,') and prealloc:
                extra[index] = word + ',prealloc=on'
        spec['extra_args'] = extra
        runtime['spec'] = spec
        return self.phase(target, 'accept', runtime=runtime, definition=prepared['definition'], **args)

    def ready(self, memory, random=True, prealloc=True, **guest):
        """A running guest on a, a target waiting on b: (prepared, accepted)."""
        self.reset()
        self.start('a', memory, random=random, **guest)
        prepared = self.phase('a', 'prepare')
        return prepared, self.accept('b', prepared, prealloc=prealloc)

    def adhoc(self, host, args, module='hvops.kvm.kvm_migrate'):
        """(wall seconds, rc, result) of one ``ansible HOST -m MODULE`` run."""
        from tests.harness.ansible_run import run_adhoc
        args = dict(args, name=GUEST, run_dir=self.run_dirs[host])
        start = time.perf_counter()
        done = run_adhoc(self.inventory, module, args, host=host)
        wall = time.perf_counter() - start
        return wall, done.rc, done.result(host=host)

    def qmp(self, host):
        return common.RawQmp(self.layout(host).paths(GUEST).qmp)

    def reset(self):
        """Kill the guest on both nodes and remove its files."""
        for host in ('a', 'b'):
            if os.path.isdir(self.run_dirs[host]):
                try:
                    self.instance(host).stop(mode='kill')
                finally:
                    shutil.rmtree(self.run_dirs[host], ignore_errors=True)

    def destroy(self):
        from tests.harness.qemu_procs import kill_qemu_under
        try:
            self.reset()
        finally:
            for run_dir in self.run_dirs.values():
                kill_qemu_under(run_dir)
            shutil.rmtree(self.base, ignore_errors=True)
            if self.ram_file and os.path.exists(self.ram_file):
                os.unlink(self.ram_file)


# -- the four ways of migrating ---------------------------------------------------
def library_settings(qmp, **tuning):
    """The capabilities and parameters the library sets, for the raw script."""
    params = dict(DEFAULTS, **tuning)
    available = [c['capability'] for c in qmp.execute('query-migrate-capabilities')]
    return capabilities(params, available), parameters(params)


def migrate_library(lab, uri, **tuning):
    start = time.perf_counter()
    result = lab.phase('a', 'migrate', uri=uri, **tuning)
    wall = time.perf_counter() - start
    returned = time.time()
    assert result['status'] == 'completed', result
    timing = result['timing']
    return {'wall': wall, 'stats': result['stats'],
            'latency_ms': (returned - timing['completed_at']) * 1000 if timing['completed_at'] else None,
            'seen_ms': timing['completion_seen_after_ms']}


def migrate_ansible(lab, uri, **tuning):
    wall, rc, result = lab.adhoc('a', dict(tuning, phase='migrate', uri=uri))
    returned = time.time()
    assert rc == 0 and result['status'] == 'completed', result
    timing = result['timing']
    return {'wall': wall, 'stats': result['stats'],
            'latency_ms': (returned - timing['completed_at']) * 1000 if timing['completed_at'] else None,
            'module_latency_ms': timing['returned_after_ms'], 'seen_ms': timing['completion_seen_after_ms'],
            'module_wait_s': timing['wait_s']}


def migrate_raw(lab, uri, settings):
    """The minimal script: connect, the same settings, migrate, wait for the
    completion event, close."""
    caps, params = settings
    start = time.perf_counter()
    qmp = lab.qmp('a')
    qmp.execute('migrate-set-capabilities', {'capabilities': caps})
    qmp.execute('migrate-set-parameters', params)
    qmp.execute('migrate', {'uri': uri})
    event = qmp.wait_event('MIGRATION', lambda e: e['data']['status'] in ('completed', 'failed', 'cancelled'))
    qmp.close()
    wall = time.perf_counter() - start
    returned = time.time()
    assert event['data']['status'] == 'completed', event
    return {'wall': wall, 'stats': source_stats(lab),
            'latency_ms': (returned - common.event_time(event)) * 1000}


def migrate_seed(lab, uri):
    """Ganeti's MigrateInstance: ``migrate -d``, then ``info migrate`` at
    once and every 2 s until it says completed; QEMU's default parameters."""
    with lab.qmp('a') as probe:
        defaults = probe.execute('query-migrate-parameters')
    assert defaults['max-bandwidth'] == QEMU_DEFAULT_BANDWIDTH, defaults
    start = time.perf_counter()
    qmp = lab.qmp('a')
    said = qmp.hmp('migrate -d %s' % uri)
    sent = time.time()
    assert not said.strip(), said
    while True:
        status = SEED_STATUS.search(qmp.hmp('info migrate')).group(1)
        if status == 'completed':
            break
        assert status not in ('failed', 'cancelled'), status
        time.sleep(SEED_POLL)
    qmp.close()
    wall = time.perf_counter() - start
    returned = time.time()
    stats = source_stats(lab)
    # No events with QEMU's defaults: completion is when QEMU's clock says.
    completed = sent + stats['total_time_ms'] / 1000.0
    return {'wall': wall, 'stats': stats, 'latency_ms': (returned - completed) * 1000,
            'bandwidth': defaults['max-bandwidth'], 'downtime_limit': defaults['downtime-limit']}


def source_stats(lab):
    with lab.qmp('a') as qmp:
        for _try in range(100):
            info = qmp.execute('query-migrate')
            if info.get('total-time'):
                break
            time.sleep(0.01)
    return extract_stats(info)


Case = collections.namedtuple('Case', 'label memory random methods prealloc rounds')


def size_cases(quick):
    """The wall-time runs and their rounds. The small zero-page guest shows
    each way's fixed cost; 512 MiB, where the targets are, gets the most
    rounds; ansible is left out at 1 GiB (its cost does not grow with the
    guest) to keep ``make bench`` short. The last case leaves the target's RAM
    to be faulted in by the incoming migration, as a fresh QEMU does."""
    if quick:
        return [Case('64 MiB of zero pages', 64, False, METHODS, True, 2),
                Case('256 MiB random', 256, True, METHODS, True, 2)]
    return [Case('64 MiB of zero pages', 64, False, METHODS, True, 4),
            Case('256 MiB random', 256, True, METHODS, True, 4),
            Case('512 MiB random', 512, True, METHODS, True, 6),
            Case('1 GiB random', 1024, True, ('raw', 'library', 'seed'), True, 3),
            Case('512 MiB random, target RAM not preallocated', 512, True, ('raw', 'library', 'seed'), False, 3)]


def run_order(methods, rnd):
    """The ways of one round: raw and library back to back (their ratio is
    the one most sensitive to a change of load), the others beside them;
    each pair's order alternates, and the pairs swap every two rounds."""
    pair = [m for m in ('raw', 'library') if m in methods]
    rest = [m for m in methods if m not in pair]
    if rnd % 2:
        pair, rest = pair[::-1], rest[::-1]
    return pair + rest if rnd % 4 < 2 else rest + pair


def wall_times(lab, cases, settle, samples):
    for rnd in range(max(case.rounds for case in cases)):
        for label, memory, random, methods, prealloc, rounds in cases:
            if rnd >= rounds:
                continue
            for method in run_order(methods, rnd):
                _prepared, accepted = lab.ready(memory, random=random, prealloc=prealloc)
                uri = accepted['uri']
                settings = None
                if method == 'raw':
                    with lab.qmp('a') as qmp:
                        settings = library_settings(qmp)
                load = settle()
                with common.CpuMeter([lab.instance('a').pid(), lab.instance('b').pid()]) as meter:
                    if method == 'raw':
                        out = migrate_raw(lab, uri, settings)
                    elif method == 'library':
                        out = migrate_library(lab, uri)
                    elif method == 'ansible':
                        out = migrate_ansible(lab, uri)
                    else:
                        out = migrate_seed(lab, uri)
                stats = out.pop('stats')
                samples.add(label, method, out.pop('wall'), rnd, load, stats=compact(stats),
                            others_cpus=meter.others_cpus, **out)
                print('  round %d, %-18s %-8s %6.2f s  (QEMU total %s ms, downtime %s ms, %s MiB/s;'
                      ' load %.2f, others used %.2f CPUs)'
                      % (rnd + 1, label, method, samples.records[-1]['value'], stats['total_time_ms'],
                         stats['downtime_ms'], stats['average_mib_s'], load['load1'], meter.others_cpus),
                      flush=True)
    lab.reset()


def compact(stats):
    keep = ('total_time_ms', 'downtime_ms', 'expected_downtime_ms', 'setup_time_ms', 'transferred_bytes',
            'ram_total_bytes', 'throughput_mbps', 'average_mib_s', 'passes', 'normal_pages',
            'duplicate_pages', 'dirty_rate_mib_s')
    return dict((key, stats.get(key)) for key in keep)


# -- downtime ---------------------------------------------------------------------
DOWNTIME_CASES = (
    # label, guest memory MiB, random RAM, variant, dirty MiB, downtime limit ms
    ('idle, 512 MiB random RAM', 512, True, 'normal', 0, 300),
    ('idle, 512 MiB random RAM, limit 50 ms', 512, True, 'normal', 0, 50),
    ('idle, 256 MiB mostly zero pages', 256, False, 'normal', 0, 300),
    ('dirty guest rewriting 32 MiB', 256, False, 'dirty', 32, 300),
    ('dirty guest rewriting 64 MiB', 256, False, 'dirty', 64, 300),
    ('dirty guest rewriting 256 MiB', 512, False, 'dirty', 256, 300),
    ('dirty guest rewriting 32 MiB, limit 100 ms', 256, False, 'dirty', 32, 100),
)


def downtimes(lab, rounds, settle, samples, cases=DOWNTIME_CASES):
    for rnd in range(rounds):
        for label, memory, random, variant, dirty_mib, limit in cases:
            _prepared, accepted = lab.ready(memory, random=random, variant=variant, dirty_mib=dirty_mib or 64)
            if variant == 'dirty':
                time.sleep(1.0)  # the guest is rewriting its RAM by now
            load = settle()
            with common.CpuMeter([lab.instance('a').pid(), lab.instance('b').pid()]) as meter:
                out = migrate_library(lab, accepted['uri'], downtime_limit_ms=limit, stall_timeout=30, timeout=120)
            stats = out['stats']
            samples.add(label, 'downtime', stats['downtime_ms'], rnd, load, limit_ms=limit,
                        wall=out['wall'], stats=compact(stats), others_cpus=meter.others_cpus)
            print('  round %d, %-44s downtime %4s ms (limit %d), total %s ms, %s passes, %.2f s'
                  % (rnd + 1, label, stats['downtime_ms'], limit, stats['total_time_ms'], stats['passes'],
                     out['wall']), flush=True)
    lab.reset()


# -- the whole migration through ansible ---------------------------------------------
PLAYBOOK = os.path.join(common.REPO, 'playbooks', 'migrate.yml')
# The collection as it was before the migrate role was made lean (17 tasks, 7
# kvm_migrate runs): its playbook runs beside today's, in the same rounds.
BASELINE_COMMIT = 'f032742'
BASELINE = os.path.join(common.QUICK_RESULTS, 'baseline-%s' % BASELINE_COMMIT)
# junit task name -> phase (the role's task names); any other task is 'other'.
TASK_PHASES = (('Look at the guest', 'status'), ('Prepare on the source', 'prepare'),
               ('Accept the guest', 'accept'), ('Migrate from the source', 'migrate'),
               ('Finalize on the target', 'finalize'), ('Confirm on the source', 'confirm'))
E2E_PARTS = ('status', 'prepare', 'accept', 'migrate', 'finalize', 'confirm')


def baseline_collections():
    """ANSIBLE_COLLECTIONS_PATH of the baseline collection, unpacked once from git."""
    tree = os.path.join(BASELINE, 'ansible_collections', 'hvops', 'kvm')
    if not os.path.isdir(tree):
        import tarfile
        archive = BASELINE + '.tar'
        subprocess.run(['git', '-C', common.REPO, 'archive', '--output', archive, BASELINE_COMMIT], check=True)
        os.makedirs(tree)
        with tarfile.open(archive) as tar:
            tar.extractall(tree)
        os.unlink(archive)
    return BASELINE


def phases_library(lab, src, dst):
    """What the role runs, in-process: the five phases; seconds per phase."""
    times = dict((part, 0.0) for part in E2E_PARTS)

    def timed(part, host, phase, **args):
        start = time.perf_counter()
        result = lab.phase(host, phase, **args)
        times[part] += time.perf_counter() - start
        return result

    prepared = timed('prepare', src, 'prepare')
    accepted = timed('accept', dst, 'accept', runtime=prepared['runtime'], definition=prepared['definition'])
    migrated = timed('migrate', src, 'migrate', uri=accepted['uri'])
    assert migrated['status'] == 'completed', migrated
    timed('finalize', dst, 'finalize', success=True)
    timed('confirm', src, 'confirm', success=True)
    return times, migrated


def phases_playbook(lab, src, dst, junit_dir, baseline=False, pipelining=False):
    """One ``ansible-playbook playbooks/migrate.yml`` run (``baseline``: the
    baseline collection's; ``pipelining``: with ANSIBLE_PIPELINING); seconds per task kind from ansible-core's junit
    callback ('other': the role's set_fact, assert, debug... tasks; 'outside
    tasks': start-up, inventory, the play)."""
    from tests.harness.ansible_run import run_playbook
    for old in os.listdir(junit_dir):
        os.unlink(os.path.join(junit_dir, old))
    env = {'ANSIBLE_CALLBACKS_ENABLED': 'ansible.builtin.junit', 'JUNIT_OUTPUT_DIR': junit_dir,
           'JUNIT_HIDE_TASK_ARGUMENTS': 'true', 'JUNIT_INCLUDE_SETUP_TASKS_IN_REPORT': 'false'}
    playbook = PLAYBOOK
    if pipelining:
        env['ANSIBLE_PIPELINING'] = 'true'
    if baseline:
        env['ANSIBLE_COLLECTIONS_PATH'] = baseline_collections()
        playbook = os.path.join(BASELINE, 'ansible_collections', 'hvops', 'kvm', 'playbooks', 'migrate.yml')
    start = time.perf_counter()
    play = run_playbook(lab.inventory, playbook, extra_vars={'instance': GUEST, 'source': src, 'target': dst},
                        env=env)
    wall = time.perf_counter() - start
    assert play.rc == 0, play
    times = junit_task_times(junit_dir)
    times['outside tasks'] = wall - sum(times.values())
    migrated = [result for name, result in play.tasks() if name.endswith('Migrate from the source')][0]
    assert migrated['status'] == 'completed', migrated
    return times, migrated


def junit_task_times(junit_dir):
    import xml.etree.ElementTree as ET
    times = {'other': 0.0}
    for entry in os.listdir(junit_dir):
        for case in ET.parse(os.path.join(junit_dir, entry)).getroot().iter('testcase'):
            name = case.get('name')
            part = next((p for words, p in TASK_PHASES if words in name), 'other')
            times[part] = times.get(part, 0.0) + float(case.get('time'))
    return times


def end_to_end(lab, memory, rounds, settle, samples):
    """The guest migrates a->b, b->a, ... each round once per way (order alternating)."""
    lab.reset()
    lab.start('a', memory)
    here, there = 'a', 'b'
    junit_dir = os.path.join(lab.base, 'junit')
    os.makedirs(junit_dir, exist_ok=True)
    ways = ('library', 'playbook', 'baseline playbook', 'playbook, pipelining')
    for rnd in range(rounds):
        for way in ways if rnd % 2 == 0 else ways[::-1]:
            load = settle()
            start = time.perf_counter()
            if way == 'library':
                parts, migrated = phases_library(lab, here, there)
            else:
                parts, migrated = phases_playbook(lab, here, there, junit_dir, baseline=way == 'baseline playbook',
                                                  pipelining=way == 'playbook, pipelining')
            wall = time.perf_counter() - start
            samples.add(memory, way, wall, rnd, load, parts=parts, qemu_total_ms=migrated['stats']['total_time_ms'],
                        migrate_wait_s=migrated['timing']['wait_s'])
            print('  round %d, %-8s %s -> %s  %6.2f s  (%s)' % (
                rnd + 1, way, here, there, wall, ', '.join('%s %.2f' % item for item in parts.items())), flush=True)
            here, there = there, here
    lab.reset()


# -- the report ----------------------------------------------------------------------
QUIET_CPUS = 0.5


def quiet_rounds(samples, label, methods):
    """Rounds of a case in which, during every way's run, other processes
    kept less than QUIET_CPUS of the 2 CPUs busy."""
    rounds = set(r['round'] for r in samples.select(label))
    for record in samples.select(label):
        if record['series'] in methods and (record.get('others_cpus') or 0) > QUIET_CPUS:
            rounds.discard(record['round'])
    return rounds


def report_wall(rep, samples, cases):
    table = Table('Migrate phase wall time, seconds: median (min-max) over all rounds',
                  ['guest RAM'] + [LABELS[m] for m in METHODS] + ['others\' CPUs'])
    chart = BarChart('Migration wall time, loopback (lower is better)', ' s', [LABELS[m] for m in METHODS],
                     note='median of all rounds; whiskers: fastest and slowest; bandwidth unlimited except for the'
                          ' seed (QEMU\'s default 128 MiB/s)')
    ratios = Table('Paired ratios (median (min-max) of per-round ratios); quiet: rounds in which other processes'
                   ' kept under %.1f CPU busy during every run' % QUIET_CPUS,
                   ['guest RAM', 'rounds', 'quiet', 'library / raw', 'library / raw, quiet',
                    'library / raw, cost outside QEMU', 'seed / library', 'seed / library, quiet',
                    'ansible / library'])
    for label, _memory, _random, methods, _prealloc, _rounds in cases:
        cells = [label]
        for method in METHODS:
            summary = samples.summary(label, method)
            cells.append(fmt_summary(summary, 2))
            chart.set(label, LABELS[method], summary['median'], summary['min'], summary['max'])
        cells.append(fmt(common.summarize([r.get('others_cpus') for r in samples.select(label)])['median'], 2))
        table.add(*cells)
        quiet = quiet_rounds(samples, label, ('raw', 'library', 'seed'))
        ratios.add(label, len(set(r['round'] for r in samples.select(label))), len(quiet),
                   fmt_ratio(samples.ratio(label, 'library', 'raw')),
                   fmt_ratio(samples.ratio(label, 'library', 'raw', rounds=quiet)),
                   structural_ratio(samples, label),
                   fmt_ratio(samples.ratio(label, 'seed', 'library'), 1),
                   fmt_ratio(samples.ratio(label, 'seed', 'library', rounds=quiet), 1),
                   fmt_ratio(samples.ratio(label, 'ansible', 'library'), 1))
    outside = dict((m, outside_qemu_ms(samples, m)) for m in METHODS)
    if None not in (outside['raw'], outside['library'], outside['ansible']):
        ratios.notes.append('Fixed cost, from wall time less the total time QEMU reports, over every run: raw script'
                            ' %.0f ms, library %.0f ms, ansible %.2f s. (QEMU\'s own time for the same small guest'
                            ' varies by itself from 10 to 55 ms, in every way alike.)'
                            % (outside['raw'], outside['library'], outside['ansible'] / 1000.0))
    table.notes.append('others\' CPUs: how many of the 2 CPUs other processes kept busy during the runs'
                       ' (median); each round runs every way once, in an order that changes from round to round.')
    ratios.notes.append('library / raw, cost outside QEMU: (QEMU\'s total time + the library\'s time outside it) /'
                        ' (QEMU\'s total time + the raw script\'s), medians of the case: the ratio with QEMU\'s own'
                        ' time, which varies with the load whoever drives it, held the same.')
    ratios.notes.append('Targets at 512 MiB: library / raw at most 1.10, seed / library at least 4.')
    rep.table(table)
    rep.table(ratios)
    rates = Table('What QEMU reports for the same runs (medians)',
                  ['guest RAM', 'method', 'QEMU total ms', 'wall - QEMU total ms', 'downtime ms', 'setup ms',
                   'MiB/s', 'passes', 'MiB sent', 'load (1 min)', 'others\' CPUs'], labels=2)
    for label, _memory, _random, methods, _prealloc, _rounds in cases:
        for method in methods:
            records = samples.select(label, method)
            if not records:
                continue

            def med(key, records=records):
                return common.summarize([r['stats'][key] for r in records])['median']
            rates.add(label, method, fmt(med('total_time_ms'), 0),
                      fmt(common.summarize([r['value'] * 1000 - r['stats']['total_time_ms'] for r in records])['median'],
                          0),
                      fmt(med('downtime_ms'), 0),
                      fmt(med('setup_time_ms'), 0), fmt(med('average_mib_s'), 0), fmt(med('passes'), 0),
                      fmt(common.summarize([r['stats']['transferred_bytes'] / MIB for r in records])['median'], 0),
                      fmt(samples.summary(label, method)['load1'], 2),
                      fmt(common.summarize([r.get('others_cpus') for r in records])['median'], 2))
    rep.table(rates)
    rep.chart = chart


def structural_ratio(samples, label):
    records = [r for r in samples.select(label) if r['series'] in ('raw', 'library')
               and r['stats'].get('total_time_ms') is not None]
    qemu = common.summarize([r['stats']['total_time_ms'] for r in records])['median']
    outside = [common.summarize([r['value'] * 1000 - r['stats']['total_time_ms'] for r in records
                                 if r['series'] == way])['median'] for way in ('library', 'raw')]
    if qemu is None or None in outside:
        return '-'
    return '%.2fx' % ((qemu + outside[0]) / (qemu + outside[1]))


def outside_qemu_ms(samples, method):
    """Median of wall time less QEMU's total-time over all runs of a way: its
    own cost, whatever QEMU took."""
    return common.summarize([r['value'] * 1000 - r['stats']['total_time_ms'] for r in samples.select(series=method)
                             if r['stats'].get('total_time_ms') is not None])['median']


def report_latency(rep, samples):
    table = Table('Completion latency: QEMU\'s completion event (its timestamp) to the phase returning (ms)',
                  ['method', 'median', 'min', 'max', 'n', 'event seen after (median)'])
    for method in METHODS:
        records = samples.select(series=method)
        latency = common.summarize([r.get('latency_ms') for r in records])
        seen = common.summarize([r.get('seen_ms') for r in records])
        if not latency['n']:
            continue
        table.add(LABELS[method], fmt(latency['median'], 1), fmt(latency['min'], 1), fmt(latency['max'], 1),
                  latency['n'], fmt(seen['median'], 1))
        if method == 'ansible':
            inside = common.summarize([r.get('module_latency_ms') for r in records])
            table.add('  of which inside the module', fmt(inside['median'], 1), fmt(inside['min'], 1),
                      fmt(inside['max'], 1), inside['n'], '')
    table.notes.append('The seed enables no events: its completion time is the start plus the total-time '
                       'QEMU reports. Target for the phase: under 50 ms.')
    rep.table(table)


def series_order(samples):
    groups = []
    for record in samples.records:
        if record['group'] not in groups:
            groups.append(record['group'])
    return groups


def report_downtime(rep, samples, wall_samples):
    table = Table('Downtime QEMU reports (ms), kvm_migrate\'s migrate phase in-process',
                  ['guest', 'limit', 'median', 'min', 'max', 'n', 'passes', 'QEMU total ms'])
    for group in series_order(samples):
        records = samples.select(group)
        summary = samples.summary(group)
        table.add(group, '%d' % records[0]['limit_ms'], fmt(summary['median'], 0), fmt(summary['min'], 0),
                  fmt(summary['max'], 0), summary['n'],
                  fmt(common.summarize([r['stats']['passes'] for r in records])['median'], 0),
                  fmt(common.summarize([r['stats']['total_time_ms'] for r in records])['median'], 0))
    for label in series_order(wall_samples):
        records = [r for r in wall_samples.select(label) if r['series'] in ('raw', 'library', 'ansible')]
        values = [r['stats']['downtime_ms'] for r in records]
        summary = common.summarize(values)
        table.add('idle, %s (the wall-time runs)' % label, '300',
                  fmt(summary['median'], 0),
                  fmt(summary['min'], 0), fmt(summary['max'], 0), summary['n'],
                  fmt(common.summarize([r['stats']['passes'] for r in records])['median'], 0),
                  fmt(common.summarize([r['stats']['total_time_ms'] for r in records])['median'], 0))
    rep.table(table)


def report_end_to_end(rep, samples, memory):
    ways = [way for way in ('library', 'playbook', 'baseline playbook', 'playbook, pipelining')
            if samples.select(memory, way)]
    if not ways:
        return
    parts = list(E2E_PARTS) + ['other', 'outside tasks']
    names = {'library': 'the five phases in-process',
             'playbook': 'ansible-playbook playbooks/migrate.yml',
             'baseline playbook': 'the same, collection at %s (before the lean role)' % BASELINE_COMMIT,
             'playbook, pipelining': 'playbooks/migrate.yml with ANSIBLE_PIPELINING=true'}
    table = Table('A whole migration, %d MiB guest of random RAM going back and forth: seconds (medians)' % memory,
                  ['way', 'total'] + parts + ['vs in-process', 'vs baseline'])
    for way in ways:
        records = samples.select(memory, way)
        cells = [names[way], fmt_summary(samples.summary(memory, way), 2)]
        for part in parts:
            values = [r['parts'].get(part) for r in records if part in r['parts']]
            cells.append(fmt(common.summarize(values)['median'], 2) if values else '-')
        cells.append(fmt_ratio(samples.ratio(memory, way, 'library')))
        cells.append(fmt_ratio(samples.ratio(memory, way, 'baseline playbook'))
                     if 'baseline playbook' in ways else '-')
        table.add(*cells)
    lib = samples.select(memory, 'library')
    for way, modules in (('playbook', 5), ('baseline playbook', 7), ('playbook, pipelining', 5)):
        play = samples.select(memory, way)
        if not play or not lib:
            continue

        def median(records, key):
            return common.summarize([r['parts'].get(key, 0.0) for r in records])['median']
        module_tasks = sum(median(play, part) for part in E2E_PARTS)
        own = sum(median(lib, part) for part in E2E_PARTS)
        total = samples.summary(memory, way)['median']
        table.notes.append(
            'Split of the %s\'s %.2f s: the library\'s own work (the five phases in-process) %.2f s; Ansible'
            ' around the %d kvm_migrate tasks %.2f s (%.2f s per task); the role\'s other tasks (set_fact, assert,'
            ' debug, skipped ones) %.2f s; outside any task (start-up, inventory, play) %.2f s.'
            % (way, total, own, modules, module_tasks - own, (module_tasks - own) / float(modules),
               median(play, 'other'), median(play, 'outside tasks')))
    table.notes.append('Task times from ansible-core\'s junit callback; status counts the baseline\'s status tasks'
                       ' on both nodes. Every way runs in every round, in alternating order.')
    rep.table(table)


def main(quick=False, out_dir=common.RESULTS):
    cases = size_cases(quick)
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1])
    settle = Settler(max_wait=8.0, budget=15 if quick else 90)
    lab = Lab()
    wall, downtime, e2e = Samples(), Samples(), Samples()
    try:
        lab.random_ram(max(case.memory for case in cases if case.random))
        print('migrate phase wall time', flush=True)
        wall_times(lab, cases, settle, wall)
        print('downtime', flush=True)
        downtimes(lab, 1 if quick else 2, settle, downtime, DOWNTIME_CASES[3:5] if quick else DOWNTIME_CASES)
        print('a whole migration through ansible', flush=True)
        end_to_end(lab, 256, 1 if quick else 4, settle, e2e)
    finally:
        lab.destroy()
    report_wall(rep, wall, cases)
    report_latency(rep, wall)
    report_downtime(rep, downtime, wall)
    report_end_to_end(rep, e2e, 256)
    rep.data.update(wall_samples=wall.records, downtime_samples=downtime.records, end_to_end_samples=e2e.records)
    rep.write()
    return rep


if __name__ == '__main__':
    main(quick='--quick' in sys.argv[1:], out_dir=common.QUICK_RESULTS if '--quick' in sys.argv else common.RESULTS)
