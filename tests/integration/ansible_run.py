"""Run real ``ansible`` and ``ansible-playbook`` against a local inventory and
return the per-task results parsed from the json stdout callback."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The ansible of the venv whose Python runs the tests: the project's .venv, or
# that of another ansible-core line (`make matrix`); else the project's.
VENV_BIN = os.path.dirname(sys.executable)
if not os.path.exists(os.path.join(VENV_BIN, 'ansible-playbook')):
    VENV_BIN = os.path.join(REPO, '.venv', 'bin')


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(REPO, 'build', 'collections'),
        'ANSIBLE_STDOUT_CALLBACK': 'test_json',
        'ANSIBLE_CALLBACK_PLUGINS': os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins'),
        'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_HOST_KEY_CHECKING': '0',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'ANSIBLE_LOCALHOST_WARNING': '0',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0',
    })
    env.update(extra or {})
    return env


def write_local_inventory(path):
    with open(path, 'w') as handle:
        handle.write('localhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
    return path


class AnsibleResult:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.data = json.loads(proc.stdout[proc.stdout.index('{'):])
        except ValueError:
            raise AssertionError('ansible printed no JSON (rc %d):\n%s\n%s' % (self.rc, proc.stdout, proc.stderr))

    def tasks(self, host='localhost'):
        """[(task name, result)] for one host, in order, across plays."""
        out = []
        for play in self.data['plays']:
            for task in play['tasks']:
                if host in task['hosts']:
                    out.append((task['task']['name'], task['hosts'][host]))
        return out

    def result(self, index=-1, host='localhost'):
        return self.tasks(host)[index][1]

    def __repr__(self):
        results = [(name, dict((k, v) for k, v in result.items() if k in ('msg', 'changed', 'actions', 'state')))
                   for name, result in self.tasks()]
        return 'AnsibleResult(rc=%d, results=%r, stderr=%r)' % (self.rc, results, self.stderr[-2000:])


def run_adhoc(inventory, module, args, host='localhost', check=False, diff=False, env=None):
    """ansible HOST -m MODULE -a ARGS; ARGS is a dict, passed as JSON."""
    argv = [os.path.join(VENV_BIN, 'ansible'), host, '-i', inventory, '-m', module, '-a', json.dumps(args)]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(env), timeout=300,
                          check=False)
    return AnsibleResult(proc)


def run_playbook(inventory, playbook_path, check=False, diff=False, extra_vars=None, env=None, timeout=600):
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory, playbook_path]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    if extra_vars:
        argv += ['-e', json.dumps(extra_vars)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(env), timeout=timeout,
                          check=False)
    return AnsibleResult(proc)


def write_playbook(path, tasks, hosts='localhost', gather_facts=False):
    """A one-play playbook from a list of task dicts (JSON is YAML)."""
    with open(path, 'w') as handle:
        json.dump([{'name': 'test play', 'hosts': hosts, 'gather_facts': gather_facts, 'tasks': tasks}],
                  handle, indent=1)
    return path
