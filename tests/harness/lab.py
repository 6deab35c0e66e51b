"""The two-host test lab (tools/lab.py) for pytest.

tests/integration/conftest.py makes it the session fixture ``lab``:

    from tests.harness.lab import lab_session

    @pytest.fixture(scope='session')
    def lab():
        with lab_session() as the_lab:
            yield the_lab

lab_session() skips the test (fails it under CI=true) when the machine cannot
run the lab, holds the lab's lock for the whole session (a second session on
the machine waits for the first instead of tearing the lab down under it),
brings the lab up -- removing leftovers of a crashed run -- and takes it down
at the end, unless the lab was already up before (``make lab-up``: whoever
made it removes it) or HVK_LAB_KEEP=1. The Lab it yields has ``hosts``
(name, namespace, address, run_dir, state_dir, ssh_port, ...), ``inventory``,
``cut_link()``/``restore_link()``, ``run(host, argv)`` and ``popen(host, argv)``
(see tools/lab.py).
"""
import contextlib
import json
import os

import pytest

from tests.harness import REPO
from tests.harness.qemu_procs import kill_qemu_under
from tools import lab as lab_tool

LAB_TOOL = os.path.join(REPO, 'tools', 'lab.py')
Lab = lab_tool.Lab
LabError = lab_tool.LabError
missing_prerequisites = lab_tool.missing_prerequisites


def require_lab_prerequisites(python='/usr/bin/python3'):
    """Skip the test when the machine cannot run the lab; fail it under CI=true."""
    problems = missing_prerequisites(python)
    if problems:
        message = 'the two-host lab cannot run here: ' + '; '.join(problems)
        if os.environ.get('CI') == 'true':
            pytest.fail('CI=true and a prerequisite is missing: ' + message, pytrace=False)
        pytest.skip(message)


@contextlib.contextmanager
def lab_session(keep=None, check_prerequisites=True, **options):
    """Yield a Lab that is up; options go to Lab() (name, base, subnet, ...).
    The lock wait defaults to HVK_LAB_WAIT seconds (600)."""
    options.setdefault('lock_timeout', float(os.environ.get('HVK_LAB_WAIT', '600')))
    lab = Lab(**options)
    if check_prerequisites:
        require_lab_prerequisites(lab.python)
    if keep is None:
        keep = os.environ.get('HVK_LAB_KEEP') == '1'
    with lab.locked():
        keep = keep or lab.healthy()
        lab.up()
        try:
            yield lab
        finally:
            if keep:
                lab.up()    # leave it as it was found: healthy, link up
            else:
                lab.down()


def inventory_with_tls(lab, pki):
    """Path of the lab's inventory, its hosts with TLS credentials for their
    address on the link (kvm_tls_dir), as the kvm_node role makes them, from a
    new CA of pki (a tls_pki.Pki)."""
    inventory = lab.inventory_data()
    ca = pki.authority('hvops-lab-ca')
    for name, variables in inventory['all']['children']['kvm_lab']['hosts'].items():
        variables['kvm_tls_dir'] = pki.node(ca, name, address=lab.host(name).address)
    path = os.path.join(pki.base, 'inventory.json')
    with open(path, 'w') as handle:
        json.dump(inventory, handle, indent=1)
    return path


# Where a guest's files lie in a lab host's run_dir, besides state_dir/guests.
GUEST_SUBDIRS = ('pid', 'ctrl', 'conf', 'lock', 'seed', 'ifup')


def clear_guests(lab, names):
    """Kill every QEMU of the lab's run_dirs and remove the files of the
    guests ``names`` (NAME.* and NAME-*) there and in the state_dirs."""
    for host in lab.hosts:
        kill_qemu_under(host.run_dir)
        for path in [os.path.join(host.run_dir, sub) for sub in GUEST_SUBDIRS] + \
                [os.path.join(host.state_dir, 'guests')]:
            for entry in os.listdir(path) if os.path.isdir(path) else []:
                if any(entry.startswith(name + '.') or entry.startswith(name + '-') for name in names):
                    os.unlink(os.path.join(path, entry))
