"""Rolling maintenance with playbooks/maintain.yml over three simulated nodes.

kvm1, kvm2 and kvm3 of the group kvm_nodes on this machine (tests.harness.fleet:
each its own run_dir, a local connection, migrations over loopback with TLS),
four guests of tests/guest under TCG, two on kvm1 and one on each other node,
each with its own disk where every node sees it. kvm_memory_limit_mb (kvm1 600,
kvm2 500, kvm3 400 MiB) makes each drain's placement deterministic.

The maintenance task file the tests give simulates a reboot
(tests.harness.fleet.SIMULATED_REBOOT): it fails when a QEMU is left under
the node's run_dir (a reboot would kill it: the walk must have moved every
guest away) and removes the run_dir, as a tmpfs is at boot.
"""
import os

import pytest

from tests.harness import REPO
from tests.harness.fleet import HOSTS, SIMULATED_REBOOT, Fleet, write_task_file
from tests.harness.qemu_procs import TICKS_PER_SECOND, qemu_processes_under, ticks
from tests.harness.system import require_binary

MAINTAIN_BOOK = os.path.join(REPO, 'playbooks', 'maintain.yml')
LIMITS = {'kvm1': 600, 'kvm2': 500, 'kvm3': 400}
HOMES = {'vm-a': 'kvm1', 'vm-b': 'kvm1', 'vm-c': 'kvm2', 'vm-d': 'kvm3'}
MEMORY = {'vm-a': 48, 'vm-b': 32, 'vm-c': 32, 'vm-d': 32}

# Variants of the simulated reboot (tests.harness.fleet.SIMULATED_REBOOT) that
# break on one node (fail_on): 'fail' fails there; 'problem' leaves a run_dir
# anyone may write to, which kvm_node_facts reports as a problem, so the check
# refuses the node back.
BREAKS = {
    'fail': [{'name': 'Break the maintenance', 'ansible.builtin.fail': {'msg': 'the new kernel does not boot'},
              'when': 'inventory_hostname == fail_on'}],
    'problem': [{'name': 'Break the run_dir', 'ansible.builtin.file': {
        'path': '{{ kvm_run_dir }}', 'state': 'directory', 'mode': '0777'}, 'when': 'inventory_hostname == fail_on'}],
}


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-system-x86_64', 'socat'):
        require_binary(program)


@pytest.fixture
def fleet(guest_image):
    made = Fleet(limits=LIMITS)
    made.start_guests(dict((name, (HOMES[name], guest_image('normal'), MEMORY[name])) for name in HOMES))
    yield made
    made.destroy()
    for host in HOSTS:
        assert qemu_processes_under(made.run_dir(host)) == []


def task_file(fleet, name, tasks):
    return write_task_file(os.path.join(fleet.base, name), tasks)


def node_results(play):
    """{node: maintain_result} as each node of the walk set it."""
    found = {}
    for host in HOSTS:
        for _name, res in play.tasks(host):
            if 'maintain_result' in res.get('ansible_facts', {}):
                found[host] = res['ansible_facts']['maintain_result']
    return found


def walk_result(play):
    found = [res['ansible_facts']['maintain_walk_result'] for _name, res in play.tasks()
             if 'maintain_walk_result' in res.get('ansible_facts', {})]
    assert found, play
    return found[-1]


def ran_on(play, suffix, host):
    return [res for name, res in play.tasks(host) if name.endswith(suffix) and not res.get('skipped')]


def changed(play):
    return sum(counts['changed'] for counts in play.data['stats'].values())


def tick_all(fleet, where):
    return dict((name, ticks(fleet.serial(host, name))) for name, (host, _pid) in where.items())


def assert_ticks_go_on(fleet, before, where, within_s=600):
    """The same guests, going on: each tick counter continues from where it was."""
    after = tick_all(fleet, where)
    for name in before:
        assert before[name][-1] < after[name][0] <= before[name][-1] + within_s * TICKS_PER_SECOND, \
            (name, before[name], after[name])
    return after


def where_lines(where):
    """The report's line for each guest of where ({name: (host, pid)}), its node HOMES[name]."""
    lines = []
    for name, (host, pid) in sorted(where.items()):
        place = ', its node' if host == HOMES[name] else ', away from %s' % HOMES[name]
        lines.append('%s: running on %s (pid %d)%s' % (name, host, pid, place))
    return lines


def test_a_walk_maintains_every_node_and_brings_each_guest_back(fleet):
    started = fleet.where()
    assert dict((name, host) for name, (host, _pid) in started.items()) == HOMES
    before = tick_all(fleet, started)
    reboot = task_file(fleet, 'reboot.yml', SIMULATED_REBOOT)

    # Check mode: the whole plan, node by node, and nothing changed.
    snapshots = fleet.snapshots()
    checked = fleet.play(MAINTAIN_BOOK, check=True, nodes='kvm_nodes', maintain_tasks=reboot)
    assert checked.rc == 0, checked
    assert changed(checked) == 0 and fleet.snapshots() == snapshots and fleet.where() == started
    plan = walk_result(checked)
    assert plan['check_mode'] is True and plan['nodes'] == list(HOSTS)
    assert plan['report'] == [
        'Check mode, nothing was changed: kvm1 (1 of 3) would be drained (vm-a -> kvm2, vm-b -> kvm3), maintained'
        ' with reboot.yml, checked, and would take back vm-a (kvm2 -> kvm1), vm-b (kvm3 -> kvm1).',
        'Check mode, nothing was changed: kvm2 (2 of 3) would be drained (vm-c -> kvm1), maintained with reboot.yml,'
        ' checked, and would take back vm-c (kvm1 -> kvm2).',
        'Check mode, nothing was changed: kvm3 (3 of 3) would be drained (vm-d -> kvm1), maintained with reboot.yml,'
        ' checked, and would take back vm-d (kvm1 -> kvm3).',
    ] + where_lines(started)
    for host in HOSTS:
        assert ran_on(checked, 'Simulate a reboot (the run_dir is a tmpfs)', host) == []
        assert ran_on(checked, 'Migrate the guest with hvops.kvm.migrate', host) == []

    # The walk.
    walked = fleet.play(MAINTAIN_BOOK, nodes='kvm_nodes', maintain_tasks=reboot)
    assert walked.rc == 0, walked
    where = fleet.where()
    assert dict((name, host) for name, (host, _pid) in where.items()) == HOMES, 'every guest back on its node'
    after = assert_ticks_go_on(fleet, before, where)
    results = node_results(walked)
    assert sorted(results) == list(HOSTS)
    for host, result in results.items():
        mine = sorted(name for name, home in HOMES.items() if home == host)
        assert result['failed'] is False and result['guests_before'] == mine
        assert sorted(result['drained']) == mine and sorted(result['returned']) == mine
        assert result['not_returned'] == []
        # Each guest went out and came back: two migrations, both with QEMU's statistics.
        assert len(result['migrations']) == 2 * len(mine)
        assert all(m['moved'] and m['stats']['downtime_ms'] is not None for m in result['migrations'])
        assert [m['target'] for m in result['migrations'][len(mine):]] == [host] * len(mine)
        # The node was "rebooted": its run_dir wiped while it held no guest.
        assert len(ran_on(walked, 'Simulate a reboot (the run_dir is a tmpfs)', host)) == 1
        assert all(value is not None for value in result['times'].values()), result['times']
    report = walk_result(walked)['report']
    assert [line.split(' done in ')[0] for line in report[:3]] == [
        'Maintenance of kvm1 (1 of 3)', 'Maintenance of kvm2 (2 of 3)', 'Maintenance of kvm3 (3 of 3)']
    assert report[3:] == where_lines(where)
    print('\n' + '\n'.join(report))
    print('ticks: %s' % dict((name, (before[name][-1], after[name][0])) for name in before))


@pytest.mark.parametrize('breaks', ['fail', 'problem'])
def test_a_failing_node_stops_the_walk_with_every_guest_running(fleet, breaks):
    started = fleet.where()
    before = tick_all(fleet, started)
    tasks = task_file(fleet, 'reboot.yml', BREAKS[breaks] + SIMULATED_REBOOT if breaks == 'fail'
                      else SIMULATED_REBOOT + BREAKS[breaks])
    stopped = fleet.play(MAINTAIN_BOOK, nodes='kvm_nodes', maintain_tasks=tasks, fail_on='kvm2')
    assert stopped.rc != 0, stopped
    # Every guest runs, exactly one QEMU each (where() fails on two copies), and goes on.
    where = fleet.where()
    assert sorted(where) == sorted(HOMES)
    assert_ticks_go_on(fleet, before, where)
    # kvm1 was maintained and took its guests back; kvm2 was drained, then failed; kvm3 was not touched.
    assert dict((name, host) for name, (host, _pid) in where.items() if name != 'vm-c') == \
        dict((name, home) for name, home in HOMES.items() if name != 'vm-c')
    assert where['vm-c'][0] != 'kvm2'
    assert where['vm-d'] == started['vm-d']
    results = node_results(stopped)
    assert sorted(results) == ['kvm1', 'kvm2']
    assert results['kvm1']['failed'] is False and sorted(results['kvm1']['returned']) == ['vm-a', 'vm-b']
    failed = results['kvm2']
    assert failed['failed'] is True and failed['drained'] == ['vm-c'] and failed['returned'] == []
    if breaks == 'fail':
        assert failed['failed_step'] == 'maintenance' and failed['message'] == 'the new kernel does not boot'
    else:
        assert failed['failed_step'] == 'check'
        assert failed['message'].startswith('kvm2 reports 1 problem(s) after its maintenance, so its guests stay'
                                            ' where they are: run_dir ')
    assert ran_on(stopped, 'Migrate the guest back with hvops.kvm.migrate', 'kvm2') == []
    assert stopped.tasks('kvm3') == [], 'the walk stopped before kvm3'
    # The report says where each guest is.
    assert failed['report'][0].startswith('Maintenance of kvm2 (2 of 3) FAILED in step %s, after ' % failed['failed_step'])
    assert failed['report'][1] == 'The walk stops here: kvm3 not maintained.'
    assert failed['report'][2:] == where_lines(where)
    assert dict((name, seen['node']) for name, seen in failed['where'].items()) == \
        dict((name, host) for name, (host, _pid) in where.items())
    message = [res for name, res in stopped.tasks('kvm2') if name == 'Stop the walk when the node failed'][0]['msg']
    assert message.startswith('Rolling maintenance stopped at kvm2 (2 of 3), step %s: ' % failed['failed_step'])
    print('\n' + '\n'.join(failed['report']))
