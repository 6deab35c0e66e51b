"""Rolling maintenance: a three-node walk of ``playbooks/maintain.yml``, time
per node and the longest time any guest was paused.

Three simulated nodes on this machine (tests.harness.fleet: kvm1, kvm2 and
kvm3, each its own run_dir, migrations over loopback with TLS), four idle
32-48 MiB test guests under TCG (two on kvm1, one on each other node), the
maintenance a simulated reboot (the drained node's run_dir removed). Each
round walks the whole fleet: every guest goes out and comes back once.

What is measured:

* time per node, from each node's ``maintain_result.times``: the drain, the
  maintenance tasks (with the wait for the node), the check, the returns;
* for every migration, the downtime QEMU reports (``migrate_result.stats.
  downtime_ms``), against what the guest itself shows: a reader follows each
  guest's serial console from node to node (it connects to the console of
  every copy as soon as its socket appears, the incoming one included) and
  timestamps each ``tick N`` line the guest prints, 18.2 a second (the BIOS
  timer). While a guest is paused its clock stops and it prints nothing, so
  the pause of a migration is the longest gap between two ticks around it,
  less the ticks' own period (55 ms: the resolution of this measure). The largest
  gap outside any migration is reported too: the measure's noise floor here.
* from QEMU's completion of the migration (its event's timestamp) to the first
  tick on the target: the part of the pause after QEMU's downtime, while the
  target QEMU waits, paused, for the migrate role's ``finalize`` task.

The goal: no guest paused longer than its migration's downtime.
"""

import os
import select
import shutil
import socket
import threading
import time

from bench import common
from bench.common import BarChart, Samples, Settler, Table, fmt_summary

NAME = 'maintain'
TITLE = 'Rolling maintenance (playbooks/maintain.yml), three simulated nodes'
LIMITS = {'kvm1': 600, 'kvm2': 500, 'kvm3': 400}
GUESTS = {'vm-a': ('kvm1', 48), 'vm-b': ('kvm1', 32), 'vm-c': ('kvm2', 32), 'vm-d': ('kvm3', 32)}
TICKS_PER_SECOND = 18.2
TICK_S = 1 / TICKS_PER_SECOND
# How far around a migration (QEMU's start to its completion, plus the role's
# finalize) a tick gap counts as that migration's pause.
BEFORE_S = 1.0
AFTER_S = 15.0


class TickFollower(threading.Thread):
    """Follows one guest's serial console across nodes: connects to each path of
    ``paths`` as soon as a socket is there and not yet followed, and records
    (wall time, tick number, path index) for each complete ``tick N`` line."""

    def __init__(self, paths):
        super().__init__(daemon=True)
        self.paths = list(paths)
        self.ticks = []
        self.stopping = threading.Event()
        self.errors = []

    def run(self):
        # A line cut by the connection keeps its end only ("ck 1234"), which is no
        # "tick N" line: every line read is kept, none dropped (the incoming
        # copy's console is connected to before it prints its first line).
        open_socks = {}      # socket -> [path index, pending bytes]
        while not self.stopping.is_set():
            followed = set(entry[0] for entry in open_socks.values())
            for index, path in enumerate(self.paths):
                if index in followed or not os.path.exists(path):
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)
                except OSError:
                    sock.close()
                    continue
                sock.setblocking(False)
                open_socks[sock] = [index, b'']
            if not open_socks:
                time.sleep(0.01)
                continue
            ready, _w, _x = select.select(list(open_socks), [], [], 0.02)
            now = time.time()
            for sock in ready:
                entry = open_socks[sock]
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    chunk = b''
                if not chunk:
                    sock.close()
                    del open_socks[sock]
                    continue
                data = entry[1] + chunk
                lines = data.split(b'\n')
                entry[1] = lines.pop()
                for line in lines:
                    text = line.decode('ascii', 'replace').strip()
                    if text.startswith('tick '):
                        try:
                            self.ticks.append((now, int(text.split()[1]), entry[0]))
                        except ValueError:
                            self.errors.append(text)
        for sock in open_socks:
            sock.close()

    def stop(self):
        self.stopping.set()
        self.join(5)


def gaps(ticks):
    """[(start, end, stall s)] between successive tick numbers seen: the wall time
    between them less the ticks' own period (a tick missed counts its period)."""
    seen = {}
    for stamp, number, _index in ticks:
        seen.setdefault(number, stamp)
    numbers = sorted(seen)
    return [(seen[a], seen[b], seen[b] - seen[a] - (b - a) * TICK_S) for a, b in zip(numbers, numbers[1:])]


def walk(fleet, book, tasks, followers):
    """One walk of the fleet; the per-node results from the playbook's JSON output."""
    started = time.time()
    done = fleet.play(book, nodes='kvm_nodes', maintain_tasks=tasks)
    wall = time.time() - started
    results = {}
    for host in fleet.hosts:
        for _name, res in done.tasks(host):
            if 'maintain_result' in res.get('ansible_facts', {}):
                results[host] = res['ansible_facts']['maintain_result']
    if done.rc != 0 or sorted(results) != sorted(fleet.hosts):
        raise RuntimeError('the walk failed (rc %d): %s' % (done.rc, [r.get('report') for r in results.values()]
                                                            or done.stderr[-2000:]))
    return wall, results


def measure_pauses(results, followers, rnd, pauses):
    """One record per migration: QEMU's downtime, the guest's pause from its
    ticks, the wait after QEMU's completion; and the noise floor per guest."""
    spans = {}
    for host, result in results.items():
        count = len(result['drained'])
        for order, migration in enumerate(result['migrations']):
            name = migration['instance']
            completed = float(migration['migration_completed_at'])
            start = completed - migration['stats']['total_time_ms'] / 1000.0
            direction = 'out' if order < count else 'back'
            window = (start - BEFORE_S, completed + AFTER_S)
            spans.setdefault(name, []).append(window)
            around = [g for g in gaps(followers[name].ticks) if g[1] >= window[0] and g[0] <= window[1]]
            longest = max(around, key=lambda g: g[2]) if around else None
            first_after = [g[1] for g in around if g[1] >= completed]
            pause_ms = max(longest[2], 0.0) * 1000 if longest else None
            pauses.add(name, direction, pause_ms, rnd, node=host, source=migration['source'],
                       target=migration['target'], downtime_ms=migration['stats']['downtime_ms'],
                       total_time_ms=migration['stats']['total_time_ms'],
                       resume_after_ms=(min(first_after) - completed) * 1000 if first_after else None)
    floor = {}
    for name, follower in followers.items():
        outside = [g[2] for g in gaps(follower.ticks)
                   if not any(g[1] >= w[0] and g[0] <= w[1] for w in spans.get(name, []))]
        floor[name] = max(outside + [0.0]) * 1000 if outside else None
    return floor


def main(quick=False, out_dir=common.RESULTS):
    from tests.harness import REPO
    from tests.harness.fleet import SIMULATED_REBOOT, Fleet, write_task_file
    from tests.harness.qemu_procs import qemu_processes_under

    rounds = 1 if quick else 3
    rep = common.Report(NAME, TITLE, out_dir, intro=__doc__.split('\n\n', 1)[1])
    settle = Settler(max_wait=8.0, budget=15 if quick else 60)
    book = os.path.join(REPO, 'playbooks', 'maintain.yml')
    nodes, pauses, floors, walls = Samples(), Samples(), [], []
    fleet = Fleet(limits=LIMITS)
    try:
        tasks = write_task_file(os.path.join(fleet.base, 'reboot.yml'), SIMULATED_REBOOT)
        # Each guest its own copy of the disk, where every node sees it (shared storage).
        image = common.test_guest_copy(fleet.base, 'normal')
        guests = {}
        for name, (host, memory) in GUESTS.items():
            disk = os.path.join(fleet.base, '%s.img' % name)
            shutil.copyfile(image, disk)
            common.give_to_qemu(disk)
            guests[name] = (host, disk, memory)
        fleet.start_guests(guests)
        for rnd in range(rounds):
            followers = dict((name, TickFollower([fleet.serial(host, name) for host in fleet.hosts]))
                             for name in GUESTS)
            for follower in followers.values():
                follower.start()
            time.sleep(2.0)     # a baseline of ticks before the first move
            load = settle()
            print('round %d: walking kvm1, kvm2, kvm3' % (rnd + 1), flush=True)
            wall, results = walk(fleet, book, tasks, followers)
            time.sleep(1.0)
            for follower in followers.values():
                follower.stop()
            walls.append(nodes.add('walk', 'whole walk', wall, rnd, load))
            for host, result in results.items():
                for part, value in result['times'].items():
                    nodes.add(host, part, value, rnd, load)
            floors.append(measure_pauses(results, followers, rnd, pauses))
            where = fleet.where()
            assert dict((n, h) for n, (h, _pid) in where.items()) == dict((n, g[0]) for n, g in GUESTS.items()), where
            for name, follower in followers.items():
                if not follower.ticks:
                    raise RuntimeError('no tick read from %s' % name)
    finally:
        fleet.destroy()
        for host in fleet.hosts:
            assert qemu_processes_under(fleet.run_dir(host)) == []
    report(rep, nodes, pauses, floors, rounds)
    rep.data.update(node_samples=nodes.records, pause_samples=pauses.records, noise_floor_ms=floors)
    rep.write()
    return rep


def report(rep, nodes, pauses, floors, rounds):
    parts = ('drain_s', 'maintenance_s', 'check_s', 'return_s', 'total_s')
    table = Table('Time per node (s; median (min-max) of %d walk(s))' % rounds,
                  ['node', 'guests'] + [p[:-2] for p in parts])
    for host in ('kvm1', 'kvm2', 'kvm3'):
        table.add(host, len([g for g in GUESTS.values() if g[0] == host]),
                  *[fmt_summary(nodes.summary(host, part), 2) for part in parts])
    table.add('whole walk', len(GUESTS), '', '', '', '', fmt_summary(nodes.summary('walk', 'whole walk'), 1))
    table.notes.append('maintenance: the simulated reboot (3 tasks) and the wait for the node; whole walk: the'
                       ' playbook run (its first play, which lists the fleet\'s guests, and the summary included).')
    rep.table(table)

    per = Table('Each migration: QEMU\'s downtime against the pause the guest saw (ms)',
                ['guest', 'move', 'QEMU downtime', 'pause (ticks)', 'completion to first tick on target',
                 'QEMU total time', 'n'], labels=2)
    chart = BarChart('Longest pause of each guest in a walk: QEMU\'s downtime and the guest\'s ticks', ' ms',
                     ['QEMU downtime', 'pause seen in the guest\'s ticks'],
                     note='%d walk(s); whiskers: min-max; tick resolution 55 ms' % rounds, log=True)
    worst = Table('Longest pause of each guest over a walk (ms; the goal: no longer than its migration\'s downtime)',
                  ['guest', 'longest QEMU downtime', 'longest pause (ticks)', 'noise floor (largest gap elsewhere)',
                   'goal met'])
    for name in sorted(GUESTS):
        for direction in ('out', 'back'):
            records = pauses.select(name, direction)
            if not records:
                continue
            per.add(name, direction, fmt_summary(common.summarize([r['downtime_ms'] for r in records]), 0),
                    fmt_summary(pauses.summary(name, direction), 0),
                    fmt_summary(common.summarize([r['resume_after_ms'] for r in records]), 0),
                    fmt_summary(common.summarize([r['total_time_ms'] for r in records]), 0), len(records))
        records = pauses.select(name)
        by_round = {}
        for record in records:
            best = by_round.setdefault(record['round'], [0, 0])
            best[0] = max(best[0], record['downtime_ms'] or 0)
            best[1] = max(best[1], record['value'] or 0)
        downs = common.summarize([v[0] for v in by_round.values()])
        seen = common.summarize([v[1] for v in by_round.values()])
        floor = common.summarize([f.get(name) for f in floors])
        # A logarithmic scale: no bar or whisker at 0.
        for series, summary in (('QEMU downtime', downs), ('pause seen in the guest\'s ticks', seen)):
            if summary['n']:
                chart.set(name, series, max(summary['median'], 0.5), max(summary['min'], 0.5), max(summary['max'], 0.5))
        met = all(v[1] <= v[0] + TICK_S * 1000 for v in by_round.values())
        worst.add(name, fmt_summary(downs, 0), fmt_summary(seen, 0), fmt_summary(floor, 0),
                  'yes' if met else 'no')
    per.notes.append('pause (ticks): the longest gap between two successive ticks around the migration, less the'
                     ' ticks\' own period; completion to first tick: from QEMU\'s completion event (its timestamp) to'
                     ' the first tick the guest printed on the target, which the migrate role resumes in its'
                     ' finalize phase, the task after the migrate phase.')
    worst.notes.append('goal met: the longest pause within one tick period (55 ms, the resolution) of the longest'
                       ' downtime QEMU reported, in every walk.')
    rep.table(per)
    rep.table(worst)
    rep.chart = chart


if __name__ == '__main__':
    import sys
    main(quick='--quick' in sys.argv[1:], out_dir=common.QUICK_RESULTS if '--quick' in sys.argv else common.RESULTS)
