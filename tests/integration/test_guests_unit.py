"""The hvops-kvm-guests unit under a real systemd.

systemd is not PID 1 on these machines, so the unit runs in a container that
boots this machine's own /usr (systemd-nspawn --volatile=yes: a tmpfs root,
/usr read-only; ../shared/notes/qemu-facts.md has the flags). The kvm_node
role installs the unit and the node library into a scratch directory (its
guests_service tasks, as on a node where systemd does not run: the wants link
made by hand), which the container sees as /etc/systemd/system; the guests'
state_dir and disks are bound in at their own paths, run_dir is the
container's own /run/hvops-kvm (a fresh tmpfs, as at any boot).

Booting the container must start the autostart guests in order; stopping it
(SIGTERM to systemd-nspawn: a clean shutdown of the container) must run the
unit's shutdown: the ACPI power button, then forced off after the timeout.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.ansible_run import run_adhoc, run_playbook, write_playbook
from tests.harness.qemu_procs import qemu_processes_under, ticks, wait_until
from tests.harness.system import reachable_dir, require_binary

CONTAINER_RUN_DIR = '/run/hvops-kvm'
SHUTDOWN_TIMEOUT = 4


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('systemd-nspawn', 'qemu-system-x86_64', 'socat', 'nasm'):
        require_binary(program)


def container_guests():
    """{name: pid} of the QEMUs the container runs (their pidfiles in its run_dir)."""
    found = {}
    for pid, argv in qemu_processes_under(CONTAINER_RUN_DIR):
        found[argv[argv.index('-name') + 1]] = pid
    return found


def install_unit(base, state_dir):
    """The role's unit and node library under base, as the role installs them."""
    book = write_playbook(os.path.join(base, 'install.yml'), [{
        'name': 'Install the unit',
        'ansible.builtin.include_role': {'name': 'hvops.kvm.kvm_node', 'tasks_from': 'guests_service'},
        'vars': {'kvm_node_systemd_dir': os.path.join(base, 'systemd'),
                 'kvm_node_guests_lib_dir': os.path.join(base, 'lib'),
                 'kvm_node_run_dir': CONTAINER_RUN_DIR, 'kvm_node_state_dir': state_dir,
                 'kvm_node_guests_shutdown_timeout': SHUTDOWN_TIMEOUT}}])
    inventory = os.path.join(base, 'inventory.ini')
    with open(inventory, 'w') as handle:
        handle.write('localhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
    done = run_playbook(inventory, book)
    assert done.rc == 0, done
    again = run_playbook(inventory, book)
    assert again.rc == 0 and not any(result.get('changed') for _name, result in again.tasks()), again
    return inventory


def test_the_unit_starts_guests_at_boot_and_powers_them_off_at_shutdown(guest_image):
    if os.path.exists(CONTAINER_RUN_DIR) or container_guests():
        pytest.fail('%s exists on this machine: the test needs it free for the container' % CONTAINER_RUN_DIR)
    base = reachable_dir('hk-unit-')
    state_dir = os.path.join(base, 'state')
    inventory = install_unit(base, state_dir)
    unit = os.path.join(base, 'systemd', 'hvops-kvm-guests.service')
    with open(unit) as handle:
        text = handle.read()
    assert '--state-dir %s' % state_dir in text and '--timeout %d' % SHUTDOWN_TIMEOUT in text, text
    assert os.readlink(os.path.join(base, 'systemd', 'multi-user.target.wants', 'hvops-kvm-guests.service')) == unit
    assert os.path.isfile(os.path.join(base, 'lib', 'hvops-kvm-node-library.zip'))

    # The guests, defined from this machine into the state_dir the container uses.
    for name, variant, policy in (('second', 'normal', {'autostart': True, 'autostart_order': 2}),
                                  ('first', 'normal', {'autostart': True, 'autostart_order': 1,
                                                       'autostart_delay': 1}),
                                  ('tough', 'stubborn', {'autostart': True, 'autostart_order': 3}),
                                  ('manual', 'normal', {})):
        done = run_adhoc(inventory, 'hvops.kvm.kvm_instance', dict(
            policy, name=name, state='present', run_dir=os.path.join(base, 'define-run'), state_dir=state_dir,
            memory=32, accel='tcg', machine='pc', disks=[{'path': guest_image(variant), 'interface': 'ide'}]))
        assert done.rc == 0, done

    images = os.path.dirname(guest_image())
    argv = ['systemd-nspawn', '-D', '/', '--volatile=yes', '--private-network', '--register=no', '--keep-unit',
            '--machine=hvk-unit-%d' % os.getpid(), '--bind-ro=/etc/passwd', '--bind-ro=/etc/group',
            '--bind-ro=%s:/etc/systemd/system' % os.path.join(base, 'systemd'), '--bind=%s' % base,
            '--bind=%s' % images, '-b', 'systemd.firstboot=off', 'systemd.unit=multi-user.target']
    log = open(os.path.join(base, 'container.log'), 'w')
    container = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    boot_report = os.path.join(state_dir, 'node', 'boot.json')
    try:
        wait_until(lambda: os.path.exists(boot_report) or container.poll() is not None, 120, interval=0.2)
        assert os.path.exists(boot_report), open(log.name).read()[-3000:]
        with open(boot_report) as handle:
            report = json.load(handle)
        assert [guest['name'] for guest in report['started']] == ['first', 'second', 'tough'], report
        assert report['not_started'] == [], report
        assert report['started'][1]['at'] - report['started'][0]['at'] >= 1, 'first has an autostart_delay of 1 s'
        running = container_guests()
        assert sorted(running) == ['first', 'second', 'tough'], running
        for name, pid in running.items():
            # The guest's serial console, in the container's run_dir.
            ticks('/proc/%d/root%s/ctrl/%s.serial' % (pid, CONTAINER_RUN_DIR, name))
            # Each QEMU in a systemd scope of its own (systemd-run --scope), not in the unit's.
            with open('/proc/%d/cgroup' % pid) as handle:
                cgroups = handle.read()
            assert 'machine.slice/hvops-kvm-%s-' % name in cgroups, cgroups

        began = time.monotonic()
        container.send_signal(signal.SIGTERM)
        container.wait(timeout=SHUTDOWN_TIMEOUT + 90)
        took = time.monotonic() - began
    finally:
        if container.poll() is None:
            container.kill()
            container.wait(timeout=30)
        log.close()
    assert container_guests() == {}, 'a QEMU outlived the container'
    with open(os.path.join(state_dir, 'node', 'shutdown.json')) as handle:
        report = json.load(handle)
    assert report['order'] == ['tough', 'second', 'first'], report
    how = dict((guest['name'], guest['how']) for guest in report['stopped'])
    assert how == {'first': 'acpi', 'second': 'acpi', 'tough': 'forced'}, report
    assert took >= SHUTDOWN_TIMEOUT, 'the stubborn guest had its timeout before it was forced off'
    for name in ('first', 'second', 'tough'):
        with open(os.path.join(state_dir, 'guests', name + '.last')) as handle:
            assert json.load(handle)['by'] == 'node-shutdown'
    assert not os.path.exists(os.path.join(state_dir, 'guests', 'manual.last')), 'manual never ran'
    subprocess.run(['rm', '-rf', base], check=False)
