"""Run real ``ansible`` and ``ansible-playbook`` against a local inventory and
return the per-task results parsed from the json stdout callback."""

import json
import os
import subprocess
import sys

from tests.harness import COLLECTIONS, VENV_BIN

# The test_json stdout callback the results are parsed from.
CALLBACK_PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins')


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'ANSIBLE_STDOUT_CALLBACK': 'test_json',
        'ANSIBLE_CALLBACK_PLUGINS': CALLBACK_PLUGINS,
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


def state_dir_of(run_dir):
    """The state_dir of the simulated node whose run_dir is given: beside it.
    Every simulated node of the tests has its own (one machine, many nodes)."""
    return run_dir.rstrip('/') + '-state'


def run_adhoc(inventory, module, args, host='localhost', check=False, diff=False, env=None):
    """ansible HOST -m MODULE -a ARGS; ARGS is a dict, passed as JSON. A
    plain run_dir without a state_dir gets the node's (state_dir_of)."""
    run_dir = args.get('run_dir')
    if isinstance(run_dir, str) and run_dir.startswith('/') and 'state_dir' not in args:
        args = dict(args, state_dir=state_dir_of(run_dir))
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
