#!/usr/bin/env python
"""Offline stand-in for the get-pip script ansible-test downloads.

ansible-test makes its virtual environments without pip and bootstraps pip in
them by running ``get-pip-PIPVERSION.py``, which it downloads from a host these
machines cannot reach, unless ``~/.ansible/test/cache/get_pip_PIPVERSION.py``
already exists.

``--install`` copies this file into that cache, under every name the
ansible-test of the Python running it may look for (one per pip version it pins
across the Python versions it supports); tools/setup.sh runs it with each
venv's Python, since ansible-core lines pin their own pip (2.18, 2.19: 24.2;
2.16, 2.17: 23.1.2; 2.16 also 20.3.4 and 21.3.1 for Python 2.7, 3.6). The cache path
and name are the same in all of them. ansible-test later runs that copy with the
venv's Python and get-pip's arguments, e.g. ``--disable-pip-version-check
pip==24.2 --no-setuptools --no-wheel`` (2.16 and 2.17 instead pin setuptools
and wheel in the arguments: ``pip==23.1.2 setuptools==67.7.2 wheel==0.37.1``).
The copy then does what get-pip does, from the package registry instead of a
bundled pip:

* bootstrap pip with the interpreter's own ``ensurepip``;
* ``pip install`` the arguments get-pip passes on (the pinned pip);
* honour ``--no-setuptools``/``--no-wheel``: Python <= 3.11's ensurepip also
  installs setuptools, which get-pip would not, so it is removed again
  (a module that imports setuptools must still fail the import sanity test).

It prints ``get-pip stand-in:`` lines, so a run's log shows it was used.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import types

# Options of get-pip that ``pip install`` does not know.
GET_PIP_ONLY = {'--no-setuptools', '--no-wheel'}

CACHE = os.path.expanduser('~/.ansible/test/cache')


def pip(*args):
    return subprocess.call([sys.executable, '-m', 'pip', '--disable-pip-version-check'] + list(args))


def bootstrap(argv):
    print('get-pip stand-in: ensurepip for %s' % sys.executable, flush=True)
    unwanted = [name for option, name in (('--no-setuptools', 'setuptools'), ('--no-wheel', 'wheel'))
                if option in argv and importlib.util.find_spec(name) is None]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'],
                          stdout=subprocess.DEVNULL)
    rc = pip('install', *[arg for arg in argv if arg not in GET_PIP_ONLY])
    if rc:
        return rc
    # What ensurepip brought that get-pip was told to leave out.
    listed = subprocess.run([sys.executable, '-m', 'pip', 'list', '--format=freeze', '--disable-pip-version-check'],
                            stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    present = {line.split('==')[0].lower() for line in listed.splitlines()}
    extra = [name for name in unwanted if name in present]
    if extra:
        rc = pip('uninstall', '-q', '-y', *extra)
    return rc


def cache_names():
    """The cache file names the installed ansible-test may look for."""
    from ansible_test._internal.python_requirements import get_venv_packages
    from ansible_test._util.target.common.constants import CONTROLLER_PYTHON_VERSIONS, REMOTE_ONLY_PYTHON_VERSIONS

    versions = REMOTE_ONLY_PYTHON_VERSIONS + CONTROLLER_PYTHON_VERSIONS
    pips = {get_venv_packages(types.SimpleNamespace(version=version))['pip'] for version in versions}
    return sorted('get_pip_%s.py' % pip_version.replace('.', '_') for pip_version in pips)


def install():
    with open(__file__, 'rb') as mine:
        body = mine.read()
    os.makedirs(CACHE, exist_ok=True)
    for name in cache_names():
        target = os.path.join(CACHE, name)
        if os.path.exists(target):
            with open(target, 'rb') as cached:
                if cached.read() == body:
                    continue
        shutil.copyfile(__file__, target)
        print('setup: ansible-test pip bootstrap stand-in at %s' % target)
    return 0


if __name__ == '__main__':
    if sys.argv[1:] == ['--install']:
        sys.exit(install())
    sys.exit(bootstrap(sys.argv[1:]))
