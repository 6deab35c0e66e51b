"""How long kvm_node_facts' own work takes with 0, 10 and 20 guests.

Starts tiny paused guests (``-accel tcg -m 16 -S``, no disk) through the
library (normalize_spec, Instance.prepare_argv, Instance.start) in a temporary
run_dir, then times ``_nodeinfo.gather`` - the library call the module makes,
without Ansible's own start-up - several times per gather_subset, and the
module run as a plain process, and prints a table of median, fastest and
slowest run and the spread. Every QEMU started is stopped.

    .venv/bin/python bench/node_facts.py [--runs 15] [--guests 0,10,20]

This is a measurement, not a test: nothing fails on a slow machine.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'build', 'collections'))

from ansible_collections.hvops.kvm.plugins.module_utils import _nodeinfo, _qemu  # noqa: E402
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance  # noqa: E402
from ansible_collections.hvops.kvm.plugins.module_utils._layout import HostLayout  # noqa: E402
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import save_definition  # noqa: E402
from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec  # noqa: E402

SUBSETS = (
    ('all', ['all']),
    ('instances', ['instances']),
    ('memory', ['memory']),
    ('!instances', ['!instances']),
)


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Guests:
    """Tiny paused guests in one run_dir."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix='hkb-', dir='/tmp')
        self.layout = HostLayout(os.path.join(self.base, 'run'))
        self.info = _qemu.query_binary(run, _qemu.find_qemu())
        self.machine = _qemu.pin_machine(self.info, 'pc')
        self.instances = []

    def grow_to(self, count):
        while len(self.instances) < count:
            name = 'g%02d' % len(self.instances)
            spec = normalize_spec(name, {'memory': 16, 'accel': 'tcg', 'machine': self.machine,
                                         'serial_console': False})
            instance = Instance(self.layout, name, run)
            argv, _scripts = instance.prepare_argv(spec, self.info['path'], 'tcg', paused=True)
            self.layout.ensure()
            save_definition(instance.paths, spec)
            instance.start(argv, spec, 'tcg', qemu_version=self.info['version'], paused=True)
            self.instances.append(instance)

    def destroy(self):
        for instance in self.instances:
            try:
                instance.stop(mode='kill')
            except Exception as err:  # keep stopping the others
                print('could not stop %s: %s' % (instance.name, err), file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)


def measure(run_dir, subset, runs, expected):
    times = []
    for _run in range(runs):
        start = time.perf_counter()
        facts = _nodeinfo.gather(run, run_dir=run_dir, gather_subset=subset)
        times.append((time.perf_counter() - start) * 1000.0)
        if 'instances' in facts:
            states = [i['state'] for i in facts['instances'].values()]
            assert states == ['paused'] * expected, states
    return times


def measure_module(run_dir, runs, expected):
    """The module as a process (python, Ansible's module_utils, the library; no
    controller, no AnsiballZ wrapper)."""
    args = os.path.join(os.path.dirname(run_dir), 'args.json')
    with open(args, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'run_dir': run_dir}}, handle)
    module = os.path.join(REPO, 'plugins', 'modules', 'kvm_node_facts.py')
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, 'build', 'collections'))
    times = []
    for _run in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, module, args], capture_output=True, text=True, env=env,
                              check=True)
        times.append((time.perf_counter() - start) * 1000.0)
        instances = json.loads(proc.stdout)['ansible_facts']['kvm_node']['instances']
        assert len(instances) == expected, instances
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--runs', type=int, default=15)
    parser.add_argument('--guests', default='0,10,20')
    args = parser.parse_args()
    counts = [int(n) for n in args.guests.split(',')]
    guests = Guests()
    rows = []
    try:
        for count in counts:
            guests.grow_to(count)
            variants = [(label, subset, None) for label, subset in SUBSETS]
            if count:
                # The same, one monitor after the other: what parallel sessions save.
                variants.append(('instances, serial QMP', ['instances'], 1))
            for label, subset, parallel in variants:
                saved = _nodeinfo.MAX_PARALLEL_MONITORS
                if parallel:
                    _nodeinfo.MAX_PARALLEL_MONITORS = parallel
                try:
                    measure(guests.layout.run_dir, subset, 1, count)  # warm-up
                    times = measure(guests.layout.run_dir, subset, args.runs, count)
                finally:
                    _nodeinfo.MAX_PARALLEL_MONITORS = saved
                rows.append((count, label, statistics.median(times), min(times), max(times),
                             statistics.pstdev(times)))
            times = measure_module(guests.layout.run_dir, args.runs, count)
            rows.append((count, 'all, module process', statistics.median(times), min(times), max(times),
                         statistics.pstdev(times)))
    finally:
        guests.destroy()
    print('kvm_node_facts library call (_nodeinfo.gather), %d runs each, %d CPUs, QEMU %s'
          % (args.runs, os.cpu_count(), _qemu.version_string(guests.info['version'])))
    print('%6s  %-22s %9s %9s %9s %9s' % ('guests', 'gather_subset', 'median', 'min', 'max', 'stdev'))
    for count, label, median, low, high, spread in rows:
        print('%6d  %-22s %7.1fms %7.1fms %7.1fms %7.1fms' % (count, label, median, low, high, spread))


if __name__ == '__main__':
    main()
