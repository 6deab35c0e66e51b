"""The two-host test lab (tools/lab.py) for pytest.

A conftest makes it a session fixture with:

    from lab_fixtures import lab_session

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
(name, namespace, address, run_dir, ssh_port, ...), ``inventory``,
``cut_link()``/``restore_link()``, ``run(host, argv)`` and ``popen(host, argv)``
(see tools/lab.py).
"""
import contextlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_TOOL = os.path.join(REPO, 'tools', 'lab.py')


def _load_lab_tool():
    # Loaded once, under a name of its own: the lab lock's re-entrancy is
    # per module, and "lab" is too common a module name to put on sys.path.
    module = sys.modules.get('hvops_kvm_lab')
    if module is None:
        spec = importlib.util.spec_from_file_location('hvops_kvm_lab', LAB_TOOL)
        module = importlib.util.module_from_spec(spec)
        sys.modules['hvops_kvm_lab'] = module
        spec.loader.exec_module(module)
    return module


lab_tool = _load_lab_tool()
Lab = lab_tool.Lab
LabError = lab_tool.LabError
missing_prerequisites = lab_tool.missing_prerequisites


def require_lab_prerequisites(python='/usr/bin/python3'):
    """Skip the test when the machine cannot run the lab; fail it under CI=true."""
    import pytest  # pylint: disable=import-outside-toplevel
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
