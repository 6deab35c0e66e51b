#!/usr/bin/env python3
"""Offline stand-in for the get-pip script ansible-test downloads.

``--install`` copies this file into ansible-test's cache under the name the
installed ansible-test looks for. ansible-test later runs that copy with pip's
install options; the copy bootstraps pip through ``ensurepip`` and passes the
options on to ``pip install``.
"""

import os
import shutil
import subprocess
import sys
import types

# Options of get-pip that ``pip install`` does not know.
GET_PIP_ONLY = {'--no-setuptools', '--no-wheel'}


def bootstrap(argv):
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'],
                          stdout=subprocess.DEVNULL)
    args = [arg for arg in argv if arg not in GET_PIP_ONLY]
    return subprocess.call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check'] + args)


def install():
    from ansible_test._internal.python_requirements import get_venv_packages

    version = '%d.%d' % sys.version_info[:2]
    pip_version = get_venv_packages(types.SimpleNamespace(version=version))['pip']
    cache = os.path.expanduser('~/.ansible/test/cache')
    target = os.path.join(cache, 'get_pip_%s.py' % pip_version.replace('.', '_'))
    os.makedirs(cache, exist_ok=True)
    with open(__file__, 'rb') as mine:
        body = mine.read()
    if os.path.exists(target):
        with open(target, 'rb') as cached:
            if cached.read() == body:
                return 0
    shutil.copyfile(__file__, target)
    print('setup: ansible-test pip bootstrap stand-in at %s' % target)
    return 0


if __name__ == '__main__':
    if sys.argv[1:] == ['--install']:
        sys.exit(install())
    sys.exit(bootstrap(sys.argv[1:]))
