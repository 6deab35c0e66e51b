"""How long ``ansible-inventory --list`` takes with the hvops.kvm.guests
inventory plugin, for both sources, as guests and nodes grow.

Over the two-host lab (tools/lab.py: network namespaces reached over SSH),
tiny paused guests (``-accel tcg -m 16 -S``, no disk) are started on the lab
hosts through kvm_instance: 10 and 20 split evenly over both nodes, then 10
and 20 on kvm-b alone. Timed side by
side in rounds (the order rotating): ``ansible-inventory -i nodes -i guests.yml
--list`` with ``source: facts`` (the fact cache, filled once per size by
``ansible -m hvops.kvm.kvm_node_facts``), the same with ``source: gather``
(the plugin runs kvm_node_facts on the nodes), and as the baseline
``ansible-inventory -i nodes --list`` alone. Every QEMU started is killed.

    .venv/bin/python -m bench inventory [--quick]
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt
from tests.harness import VENV_BIN
from tests.harness.ansible_run import ansible_env, run_adhoc
from tests.harness.lab import Lab, clear_guests, require_lab_prerequisites

NAME = 'inventory'
TITLE = 'Inventory plugin (hvops.kvm.guests)'
BASELINE = 'nodes only'
FACTS = 'source: facts'
GATHER = 'source: gather'


def inventory_list(sources, env, expected):
    argv = [os.path.join(VENV_BIN, 'ansible-inventory')]
    for source in sources:
        argv += ['-i', source]
    start = time.perf_counter()
    proc = subprocess.run(argv + ['--list'], capture_output=True, text=True, env=ansible_env(env), check=False)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout).get('kvm_guests', {}).get('hosts', [])
    assert len(hosts) == expected, (len(hosts), expected, proc.stderr[-2000:])
    return elapsed * 1000.0


class LabGuests:
    def __init__(self, lab, inventory):
        self.lab = lab
        self.inventory = inventory
        self.started = {'kvm-a': [], 'kvm-b': []}

    def grow(self, node, count):
        host = self.lab.host(node)
        while len(self.started[node]) < count:
            name = 'b%s%02d' % (node[-1], len(self.started[node]))
            done = run_adhoc(self.inventory, 'hvops.kvm.kvm_instance', {
                'name': name, 'run_dir': host.run_dir, 'state_dir': host.state_dir, 'memory': 16, 'accel': 'tcg',
                'machine': 'pc', 'state': 'paused', 'serial_console': False}, host=node)
            assert done.rc == 0, done.result(host=node)
            self.started[node].append(name)

    def destroy(self):
        clear_guests(self.lab, [name for names in self.started.values() for name in names])


def configs(directory, nodes_pattern, inventory):
    facts = os.path.join(directory, 'facts.guests.yml')
    gather = os.path.join(directory, 'gather.guests.yml')
    with open(facts, 'w') as handle:
        json.dump({'plugin': 'hvops.kvm.guests', 'nodes': nodes_pattern}, handle)
    with open(gather, 'w') as handle:
        json.dump({'plugin': 'hvops.kvm.guests', 'source': 'gather', 'nodes': nodes_pattern,
                   'nodes_inventory': [inventory], 'gather_subset': ['instances']}, handle)
    return facts, gather


def measure(lab, inventory, sizes, runs, settle, samples, directory):
    guests = LabGuests(lab, inventory)
    try:
        for nodes, count in sizes:
            used = ['kvm-a', 'kvm-b'] if nodes == 2 else ['kvm-b']
            for node in used:
                guests.grow(node, count // nodes)
            pattern = ':'.join(used)
            cache = {'ANSIBLE_CACHE_PLUGIN': 'ansible.builtin.jsonfile',
                     'ANSIBLE_CACHE_PLUGIN_CONNECTION': os.path.join(directory, 'facts-%d-%d' % (nodes, count))}
            done = run_adhoc(inventory, 'hvops.kvm.kvm_node_facts', {
                'gather_subset': ['instances'], 'run_dir': '{{ kvm_run_dir }}', 'state_dir': '{{ kvm_state_dir }}'},
                host=pattern, env=cache)
            assert done.rc == 0, done
            facts, gather = configs(directory, pattern, inventory)
            group = '%d node%s, %d guests' % (nodes, 's' if nodes > 1 else '', count)
            # Guests on a node not used are not asked for; those of the used nodes are all listed.
            expected = sum(len(guests.started[n]) for n in used)
            variants = [(BASELINE, lambda: inventory_list([inventory], cache, 0)),
                        (FACTS, lambda: inventory_list([inventory, facts], cache, expected)),
                        (GATHER, lambda: inventory_list([gather], cache, expected))]
            for _label, call in variants:
                call()      # warm-up: ssh masters up, caches warm
            for rnd in range(runs):
                shift = rnd % len(variants)
                load = settle()
                for label, call in variants[shift:] + variants[:shift]:
                    samples.add(group, label, call(), rnd, load)
            medians = ['%s %.0f ms' % (label, samples.summary(group, label)['median']) for label, _call in variants]
            print('  %s: %s' % (group, ', '.join(medians)), flush=True)
    finally:
        guests.destroy()


def main(quick=False, out_dir=common.RESULTS):
    runs = 3 if quick else 10
    sizes = [(2, 20)] if quick else [(2, 10), (2, 20), (1, 10), (1, 20)]
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1].split('\n\n', 1)[0])
    settle = Settler(max_wait=1.0, budget=5 if quick else 30)
    samples = Samples()
    require_lab_prerequisites()
    lab = Lab()
    directory = tempfile.mkdtemp(prefix='hkb-inv-')
    with lab.locked(timeout=600):
        was_up = lab.healthy()
        lab.up()
        try:
            measure(lab, lab.inventory, sizes, runs, settle, samples, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            if not was_up:
                lab.down()
    table = Table('ansible-inventory --list, ms: median, fastest, slowest (%d runs)' % runs,
                  ['nodes, guests', 'what', 'median', 'min', 'max', 'vs nodes only', 'load (1 min)'], labels=2)
    chart = BarChart('ansible-inventory --list with hvops.kvm.guests (lower is better)', ' ms',
                     [BASELINE, FACTS, GATHER], note='median; whiskers: fastest and slowest; lab nodes over SSH; '
                                                     'guests: paused TCG QEMUs of 16 MiB')
    for group in list(dict.fromkeys(r['group'] for r in samples.records)):
        for label in (BASELINE, FACTS, GATHER):
            summary = samples.summary(group, label)
            ratio = samples.ratio(group, label, BASELINE)
            table.add(group, label, fmt(summary['median'], 0), fmt(summary['min'], 0), fmt(summary['max'], 0),
                      common.fmt_ratio(ratio, 2) if label != BASELINE else '', fmt(summary['load1'], 2))
            chart.set(group, label, summary['median'], summary['min'], summary['max'])
    table.notes.append('facts: the nodes\' inventory then guests.yml, facts from a jsonfile fact cache; gather: '
                       'guests.yml alone, kvm_node_facts (gather_subset instances) run on the nodes over SSH.')
    rep.table(table)
    rep.chart = chart
    rep.data['samples'] = samples.records
    rep.write()
    return rep


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out', default=None)
    cli = parser.parse_args()
    main(quick=cli.quick, out_dir=cli.out or (common.QUICK_RESULTS if cli.quick else common.RESULTS))
