# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a node does for its guests when it boots and before it goes down.

The hvops-kvm-guests systemd unit that the hvops.kvm.kvm_node role installs
runs this file (``python3 -m ...module_utils._node_service boot|shutdown``),
as libvirt-guests and pve-guests do for their guests:

boot      Start every guest with autostart, and every guest with
          restart_policy on-crash that crashed (its QEMU died unstopped, or it
          was running when the node went down), lowest autostart_order first
          (then by name), waiting each one's autostart_delay before the next.
          A guest is started only while the node has its memory available
          (plus a margin); what could not start is reported with why.
shutdown  Every live guest gets the ACPI power button, in reverse autostart
          order, up to ``parallel`` at a time (0: all at once); a guest still
          up after ``timeout`` seconds is forced off. Each is then recorded as
          stopped by the node, so that the next boot does not take it for a
          crash.

Both first move what collection 0.1 kept in run_dir/conf to state_dir (a
tmpfs would lose it). boot runs once per boot of the node: it leaves run_dir/booted behind (run_dir
is a tmpfs, so the next boot has none), and a start of the unit on a node
that is up finds it and starts nothing (the kvm_node role writes it before it
first starts the unit; ``--force`` runs boot all the same). shutdown removes
it, so that a restart of the unit starts the guests again.

Each run goes through kvm_instance's own reconciler (the same checks, locks
and records as a task) and writes a report, state_dir/node/boot.json or
shutdown.json, and prints it. The exit status is 0 even when a guest failed,
so that systemd keeps the unit active and runs its shutdown; only a node
whose directories cannot be used fails.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hvops.kvm.plugins.module_utils._errors import KvmError
from ansible_collections.hvops.kvm.plugins.module_utils._files import remove_quietly, write_atomic, write_json
from ansible_collections.hvops.kvm.plugins.module_utils._instance import DEFAULT_SHUTDOWN_TIMEOUT, Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._migration_checks import MEMORY_MARGIN_MB
from ansible_collections.hvops.kvm.plugins.module_utils._observe import observe
from ansible_collections.hvops.kvm.plugins.module_utils._policy import load_policy
from ansible_collections.hvops.kvm.plugins.module_utils._proc import available_kib, meminfo
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import DEFAULT_RUN_AS, lookup
from ansible_collections.hvops.kvm.plugins.module_utils._reconcile import run_task
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import load_definition


def run_argv(argv):
    """run(argv) -> (rc, stdout, stderr) without a shell, as module.run_command."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')


def guests(layout, run):
    """[(name, state, policy, memory_mb)] of every defined guest here; a guest
    whose files cannot be read is left out and named in ``problems``."""
    found, problems = [], []
    for name in layout.defined_names():
        try:
            instance = Instance(layout, name, run)
            definition = load_definition(instance.paths)
            if definition is None:
                continue
            record = observe(instance, query=False)
            policy = load_policy(instance.paths, name)
        except KvmError as err:
            problems.append({'name': name, 'reason': err.msg})
            continue
        state = record['state'] if not record['present'] else 'live'
        found.append((name, state, policy, definition.get('memory')))
    return found, problems


def boot_candidates(found):
    """Pure: the guests to start at boot, in order, each with why."""
    chosen = []
    for name, state, policy, memory in found:
        if state == 'live':
            continue
        if policy['autostart']:
            why = 'autostart'
        elif policy['restart_policy'] == 'on-crash' and state == 'crashed':
            why = 'crashed'
        else:
            continue
        chosen.append({'name': name, 'why': why, 'order': policy['autostart_order'],
                       'delay': policy['autostart_delay'], 'memory_mb': memory})
    return sorted(chosen, key=lambda guest: (guest['order'], guest['name']))


def shutdown_order(found):
    """Pure: the live guests, highest autostart_order first (then by name, reversed)."""
    live = [(policy['autostart_order'], name) for name, state, policy, _memory in found if state == 'live']
    return [name for _order, name in sorted(live, reverse=True)]


def _task(layout, name, state, by, **more):
    params = dict(name=name, state=state, run_dir=layout.run_dir, state_dir=layout.state_dir, _by=by)
    params.update(more)
    return params


def boot_marker(layout):
    return os.path.join(layout.run_dir, 'booted')


def boot(layout, run, run_as=DEFAULT_RUN_AS, margin_mb=MEMORY_MARGIN_MB, memory_limit_mb=None,
         sleep=time.sleep, force=False):
    """Start what the node should run; return the report."""
    user = lookup(run_as)
    layout.ensure(user)
    report = {'action': 'boot', 'started_at': time.time(), 'started': [], 'not_started': [], 'skipped': None,
              'taken_over': layout.take_over()}
    if os.path.exists(boot_marker(layout)) and not force:
        report.update(skipped='this boot of the node was started already (%s)' % boot_marker(layout),
                      finished_at=time.time())
        return report
    write_atomic(boot_marker(layout), '%f\n' % time.time())
    found, problems = guests(layout, run)
    report['not_started'] = problems
    candidates = boot_candidates(found)
    # What the guests started here may use: what the node has available now
    # (a guest's RAM is taken as it touches it, so later readings would
    # count those just started only in part), or less when limited.
    budget = available_kib(meminfo()) // 1024
    if memory_limit_mb is not None:
        budget = min(budget, memory_limit_mb)
    for index, guest in enumerate(candidates):
        needed = (guest['memory_mb'] or 0) + margin_mb
        available = budget - sum((g['memory_mb'] or 0) + margin_mb for g in report['started'])
        entry = {'name': guest['name'], 'why': guest['why'], 'order': guest['order'],
                 'memory_mb': guest['memory_mb']}
        if needed > available:
            entry['reason'] = 'needs %d MiB (%d MiB and a margin of %d MiB), %d MiB available' % (
                needed, guest['memory_mb'] or 0, margin_mb, available)
            report['not_started'].append(entry)
            continue
        try:
            result, _diff = run_task(_task(layout, guest['name'], 'started', 'node-boot', run_as=run_as), run)
        except KvmError as err:
            entry['reason'] = err.msg
            report['not_started'].append(entry)
            continue
        entry.update(pid=result['pid'], at=time.time())
        report['started'].append(entry)
        if guest['delay'] and index + 1 < len(candidates):
            sleep(guest['delay'])
    report['finished_at'] = time.time()
    return report


def _stop_one(layout, name, run, timeout):
    begun = time.monotonic()
    entry = {'name': name}
    try:
        result, _diff = run_task(_task(layout, name, 'stopped', 'node-shutdown', force=True,
                                       shutdown_timeout=timeout), run)
    except KvmError as err:
        entry['error'] = err.msg
    else:
        entry['how'] = result['stop_method'] or 'already stopped'
    entry['seconds'] = round(time.monotonic() - begun, 2)
    return entry


def shutdown(layout, run, run_as=DEFAULT_RUN_AS, timeout=DEFAULT_SHUTDOWN_TIMEOUT, parallel=0):
    """Power every live guest off (ACPI, then forced after timeout); return the report."""
    user = lookup(run_as)
    layout.ensure(user)
    # What collection 0.1 left in run_dir/conf would be lost with the tmpfs.
    taken = layout.take_over()
    found, problems = guests(layout, run)
    order = shutdown_order(found)
    report = {'action': 'shutdown', 'started_at': time.time(), 'order': order, 'stopped': [],
              'problems': problems, 'timeout': timeout, 'parallel': parallel, 'taken_over': taken}
    if order:
        workers = len(order) if parallel <= 0 else min(parallel, len(order))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            report['stopped'] = list(pool.map(lambda name: _stop_one(layout, name, run, timeout), order))
    remove_quietly(boot_marker(layout))
    report['finished_at'] = time.time()
    return report


def save_report(layout, report):
    write_json(os.path.join(layout.state_subdir('node'), report['action'] + '.json'), report, mode=0o600)


def summary(report):
    """The report in lines for the journal."""
    if report['action'] == 'boot':
        if report['skipped']:
            return ['no guest started: %s' % report['skipped']]
        lines = ['started %s (%s)' % (g['name'], g['why']) for g in report['started']]
        lines += ['NOT started %s: %s' % (g['name'], g['reason']) for g in report['not_started']]
        return lines or ['no guest to start']
    lines = ['%s: %s in %.1f s' % (g['name'], g.get('how') or 'FAILED: %s' % g.get('error'), g['seconds'])
             for g in report['stopped']]
    return lines or ['no guest running']


def main(argv=None):
    parser = argparse.ArgumentParser(prog='hvops-kvm-guests', description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('action', choices=('boot', 'shutdown'))
    parser.add_argument('--run-dir', default=DEFAULT_RUN_DIR)
    parser.add_argument('--state-dir', default=DEFAULT_STATE_DIR)
    parser.add_argument('--run-as', default=DEFAULT_RUN_AS)
    parser.add_argument('--timeout', type=int, default=DEFAULT_SHUTDOWN_TIMEOUT,
                        help='seconds a guest has to power off before it is forced off')
    parser.add_argument('--parallel', type=int, default=0, help='guests shut down at a time (0: all)')
    parser.add_argument('--margin-mb', type=int, default=MEMORY_MARGIN_MB,
                        help='MiB a guest needs beyond its memory to be started at boot')
    parser.add_argument('--force', action='store_true', help='boot even when this boot was started already')
    parser.add_argument('--memory-limit-mb', type=int, default=None,
                        help='MiB the guests started at boot may use in all (default: what is available)')
    args = parser.parse_args(argv)
    try:
        layout = NodeLayout(args.run_dir, args.state_dir)
        if args.action == 'boot':
            report = boot(layout, run_argv, run_as=args.run_as, margin_mb=args.margin_mb,
                          memory_limit_mb=args.memory_limit_mb, force=args.force)
        else:
            report = shutdown(layout, run_argv, run_as=args.run_as, timeout=args.timeout,
                              parallel=args.parallel)
        layout.ensure(lookup(args.run_as))
        save_report(layout, report)
    except KvmError as err:
        sys.stderr.write('hvops-kvm-guests %s: %s\n' % (args.action, err))
        return 1
    for line in summary(report):
        sys.stdout.write(line + '\n')
    sys.stdout.write(json.dumps(report, sort_keys=True) + '\n')
    sys.stdout.flush()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
