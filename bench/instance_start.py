"""kvm_instance: from a stopped, defined guest to a running one.

The test guest (tests/guest, normal variant, 64 MiB, TCG, IDE disk) is started
with ``state: started`` three ways, side by side in rounds (the order
rotating), and killed (untimed) after each:

* ``library``: ``_reconcile.run_task`` in-process, as the module calls it;
* ``module process``: plugins/modules/kvm_instance.py run as a plain python
  process (python start-up, Ansible's module_utils, the library; no
  controller, no AnsiballZ);
* ``ansible``: ``ansible localhost -m hvops.kvm.kvm_instance``.

Each run ends when the task returns; it is checked to report the guest
running, and QEMU is asked (query-status) that it runs. The library's own
time is split by profiling one extra start: QEMU's binary queried (version,
machine types; done in plan and again under the lock), QEMU starting until it
daemonizes, QMP sessions.
"""

import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt
from tests.harness import COLLECTIONS
from tests.harness.ansible_run import run_adhoc, write_local_inventory
from tests.harness.qemu_procs import kill_qemu_under
from tests.harness.system import reachable_dir

from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._reconcile import run_task

NAME = 'instance_start'
TITLE = 'Instance start (kvm_instance, state started)'
GUEST = 'vm'
WAYS = ('library', 'module process', 'ansible')


class Host:
    def __init__(self):
        self.base = reachable_dir('hkb-start-')
        self.run_dir = os.path.join(self.base, 'run')
        self.disk = common.test_guest_copy(self.base)
        self.args = {'name': GUEST, 'run_dir': self.run_dir, 'state_dir': self.run_dir + '-state', 'state': 'started', 'memory': 64, 'accel': 'tcg',
                     'machine': 'pc', 'disks': [{'path': self.disk, 'interface': 'ide'}]}
        self.inventory = write_local_inventory(os.path.join(self.base, 'inventory.ini'))
        self.args_file = os.path.join(self.base, 'args.json')
        with open(self.args_file, 'w') as handle:
            json.dump({'ANSIBLE_MODULE_ARGS': self.args}, handle)
        self.instance = Instance(NodeLayout(self.run_dir, self.run_dir + '-state'), GUEST, common.run)

    def start(self, way):
        start = time.perf_counter()
        if way == 'library':
            params = dict(self.args, monitor_timeout=10.0, lock_timeout=60, stop_mode='acpi', force=False,
                          shutdown_timeout=30)
            result, _diff = run_task(params, common.run)
        elif way == 'module process':
            module = os.path.join(common.REPO, 'plugins', 'modules', 'kvm_instance.py')
            proc = subprocess.run([sys.executable, module, self.args_file], capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=COLLECTIONS), check=False)
            result = json.loads(proc.stdout)
        else:
            done = run_adhoc(self.inventory, 'hvops.kvm.kvm_instance', self.args)
            result = done.result()
        elapsed = time.perf_counter() - start
        assert result.get('state') == 'running' and 'start' in result.get('actions', []), result
        with self.instance.monitor() as qmp:
            assert qmp.execute('query-status')['status'] == 'running'
        return elapsed * 1000.0

    def stop(self):
        self.instance.stop(mode='kill')

    def destroy(self):
        try:
            self.stop()
        finally:
            kill_qemu_under(self.run_dir)
            shutil.rmtree(self.base, ignore_errors=True)


def profile_library(host):
    """Where one in-process start spends its time (cumulative ms)."""
    profiler = cProfile.Profile()
    profiler.enable()
    host.start('library')
    profiler.disable()
    host.stop()
    stats = pstats.Stats(profiler)
    parts = {}
    for (filename, _line, func), row in stats.stats.items():
        cumulative = row[3] * 1000.0
        if func == 'query_binary':
            parts['QEMU binary queried (-version, -machine help)'] = cumulative
        elif func == 'start' and filename.endswith('_instance.py'):
            parts['Instance.start (QEMU runs and daemonizes)'] = cumulative
        elif func == 'open' and filename.endswith('_qmp.py'):
            parts['QMP sessions opened'] = cumulative
        elif func == 'close' and filename.endswith('_qmp.py'):
            parts['QMP sessions closed'] = cumulative
        elif func == 'run_task':
            parts['run_task in all'] = cumulative
    calls = dict(((func), row[1]) for (filename, _line, func), row in stats.stats.items()
                 if func in ('query_binary',) or (func == 'open' and filename.endswith('_qmp.py')))
    return parts, calls


def main(quick=False, out_dir=common.RESULTS):
    rounds = 3 if quick else 10
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1])
    settle = Settler(budget=10 if quick else 30)
    samples = Samples()
    host = Host()
    try:
        for way in WAYS:  # warm-up; the first also defines the guest
            host.start(way)
            host.stop()
        for rnd in range(rounds):
            shift = rnd % len(WAYS)
            for way in WAYS[shift:] + WAYS[:shift]:
                load = settle()
                samples.add('start', way, host.start(way), rnd, load)
                host.stop()
        parts, calls = profile_library(host)
    finally:
        host.destroy()
    table = Table('Start to running, ms: median (min-max) over %d rounds' % rounds,
                  ['way', 'median', 'min', 'max', 'stdev', 'vs library', 'load (1 min)'])
    chart = BarChart('kvm_instance state=started: stopped test guest to running (lower is better)', ' ms',
                     list(WAYS), note='median of %d rounds; whiskers: fastest and slowest; TCG, 64 MiB' % rounds)
    for way in WAYS:
        summary = samples.summary('start', way)
        table.add(way, fmt(summary['median'], 0), fmt(summary['min'], 0), fmt(summary['max'], 0),
                  fmt(summary['stdev'], 0), common.fmt_ratio(samples.ratio('start', way, 'library'), 1),
                  fmt(summary['load1'], 2))
        chart.set('kvm_instance start', way, summary['median'], summary['min'], summary['max'])
    rep.table(table)
    split = Table('One in-process start, profiled (cumulative ms; profiling slows it a little)',
                  ['part', 'ms'])
    for part in sorted(parts, key=parts.get, reverse=True):
        split.add(part, fmt(parts[part], 0))
    split.notes.append('calls: %s' % ', '.join('%s x%d' % item for item in sorted(calls.items())))
    rep.table(split)
    rep.chart = chart
    rep.data.update(samples=samples.records, profile=parts, profile_calls=calls)
    rep.write()
    return rep


if __name__ == '__main__':
    main(quick='--quick' in sys.argv[1:], out_dir=common.QUICK_RESULTS if '--quick' in sys.argv else common.RESULTS)
