"""How long kvm_node_facts takes with 0, 10 and 20 guests.

Starts tiny paused guests (``-accel tcg -m 16 -S``, no disk) through the
library in a temporary run_dir, then times, side by side in rounds (the order
rotating): ``_nodeinfo.gather`` - the library call the module makes - per
gather_subset, the same with one monitor at a time instead of parallel
sessions, the module run as a plain process (python, Ansible's module_utils,
the library; no controller, no AnsiballZ wrapper), and the module through
``ansible localhost -m hvops.kvm.kvm_node_facts``. Every call asks the
storage facts of a few directories of this machine's (``storage_paths``);
``!storage`` is ``all`` without them. Every QEMU started is stopped.

    .venv/bin/python -m bench node_facts [--quick]
    .venv/bin/python -m bench.node_facts [--runs 15] [--guests 0,10,20]
"""

import json
import os
import subprocess
import sys
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt
from tests.harness import COLLECTIONS
from tests.harness.ansible_run import run_adhoc, write_local_inventory

from ansible_collections.hvops.kvm.plugins.module_utils import _nodeinfo, _qemu

NAME = 'node_facts'
TITLE = 'Node facts (kvm_node_facts)'
SUBSETS = (
    ('all', ['all']),
    ('instances', ['instances']),
    ('memory', ['memory']),
    ('storage', ['storage']),
    ('!instances', ['!instances']),
    ('!storage', ['!storage']),
)
# Directories of this machine's, on a few file systems, for the storage facts.
STORAGE_PATHS = ['/', '/dev/shm', '/run', '/tmp', '/var/tmp']
SERIAL = 'instances, serial QMP'
MODULE = 'all, module process'
ANSIBLE = 'all, ansible ad-hoc'


def gather(run_dir, subset, expected, parallel=None):
    saved = _nodeinfo.MAX_PARALLEL_MONITORS
    if parallel:
        _nodeinfo.MAX_PARALLEL_MONITORS = parallel
    try:
        start = time.perf_counter()
        facts = _nodeinfo.gather(common.run, run_dir=run_dir, gather_subset=subset, storage_paths=STORAGE_PATHS)
        elapsed = time.perf_counter() - start
    finally:
        _nodeinfo.MAX_PARALLEL_MONITORS = saved
    if 'instances' in facts:
        states = [i['state'] for i in facts['instances'].values()]
        assert states == ['paused'] * expected, states
    return elapsed * 1000.0


def module_process(run_dir, expected):
    args = os.path.join(os.path.dirname(run_dir), 'args.json')
    with open(args, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'run_dir': run_dir, 'storage_paths': STORAGE_PATHS}}, handle)
    module = os.path.join(common.REPO, 'plugins', 'modules', 'kvm_node_facts.py')
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, module, args], capture_output=True, text=True, env=env, check=True)
    elapsed = time.perf_counter() - start
    instances = json.loads(proc.stdout)['ansible_facts']['kvm_node']['instances']
    assert len(instances) == expected, instances
    return elapsed * 1000.0


def ansible_adhoc(inventory, run_dir, expected):
    start = time.perf_counter()
    done = run_adhoc(inventory, 'hvops.kvm.kvm_node_facts', {'run_dir': run_dir, 'storage_paths': STORAGE_PATHS})
    elapsed = time.perf_counter() - start
    assert done.rc == 0, done
    instances = done.result()['ansible_facts']['kvm_node']['instances']
    assert len(instances) == expected, instances
    return elapsed * 1000.0


def measure(guests, counts, runs, ansible_runs, settle, samples):
    inventory = write_local_inventory(os.path.join(guests.base, 'inventory.ini'))
    run_dir = guests.layout.run_dir
    for count in counts:
        guests.grow_to(count)
        variants = [(label, lambda subset=subset: gather(run_dir, subset, count)) for label, subset in SUBSETS]
        if count:
            # The same, one monitor after the other: what parallel sessions save.
            variants.append((SERIAL, lambda: gather(run_dir, ['instances'], count, parallel=1)))
        variants.append((MODULE, lambda: module_process(run_dir, count)))
        for _label, call in variants:
            call()  # warm-up
        for rnd in range(runs):
            shift = rnd % len(variants)
            todo = variants[shift:] + variants[:shift]
            if rnd < ansible_runs:
                todo.append((ANSIBLE, lambda: ansible_adhoc(inventory, run_dir, count)))
            load = settle()
            for label, call in todo:
                samples.add(count, label, call(), rnd, load)
        medians = ['%s %.1f ms' % (label, samples.summary(count, label)['median'])
                   for label in series_of(samples, count)]
        print('  %2d guests: %s' % (count, ', '.join(medians)), flush=True)


def series_of(samples, group=None):
    seen = []
    for record in samples.records:
        if (group is None or record['group'] == group) and record['series'] not in seen:
            seen.append(record['series'])
    return seen


def main(quick=False, out_dir=common.RESULTS, runs=None, counts=None):
    runs = runs or (3 if quick else 15)
    counts = counts or (0, 10, 20)
    ansible_runs = 1 if quick else 5
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1].split('\n\n', 1)[0])
    settle = Settler(max_wait=1.0, budget=3 if quick else 30)
    samples = Samples()
    guests = common.TinyGuests('facts')
    try:
        measure(guests, counts, runs, ansible_runs, settle, samples)
    finally:
        guests.destroy()
    table = Table('kvm_node_facts, ms: median, fastest, slowest, standard deviation (%d runs; ansible %d)'
                  % (runs, ansible_runs),
                  ['guests', 'what', 'median', 'min', 'max', 'stdev', 'vs library all', 'load (1 min)'],
                  labels=2)
    order = [label for label, _subset in SUBSETS] + [SERIAL, MODULE, ANSIBLE]
    chart = BarChart('kvm_node_facts with 0, 10 and 20 guests (lower is better)', ' ms',
                     [label for label in order if label in series_of(samples)], log=True,
                     note='median; whiskers: fastest and slowest; log scale; guests: paused TCG QEMUs of 16 MiB')
    for count in counts:
        for label in [label for label in order if label in series_of(samples, count)]:
            summary = samples.summary(count, label)
            ratio = samples.ratio(count, label, 'all')
            table.add(count, label, fmt(summary['median'], 1), fmt(summary['min'], 1), fmt(summary['max'], 1),
                      fmt(summary['stdev'], 1), common.fmt_ratio(ratio, 1) if label != 'all' else '',
                      fmt(summary['load1'], 2))
            chart.set('%d guests' % count, label, summary['median'], summary['min'], summary['max'])
    table.notes.append('library: _nodeinfo.gather in-process; QEMU %s; each monitor is opened through socat.'
                       % _qemu.version_string(guests.info['version']))
    rep.table(table)
    rep.chart = chart
    rep.data['samples'] = samples.records
    rep.write()
    return rep


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--runs', type=int, default=15)
    parser.add_argument('--guests', default='0,10,20')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out', default=None)
    cli = parser.parse_args()
    main(quick=cli.quick, out_dir=cli.out or (common.QUICK_RESULTS if cli.quick else common.RESULTS),
         runs=cli.runs, counts=[int(n) for n in cli.guests.split(',')])
