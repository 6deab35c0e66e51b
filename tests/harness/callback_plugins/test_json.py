# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: prints every task result of the run as one JSON
document, {"plays": [{"play": ..., "tasks": [{"task": {"name": ...}, "hosts":
{host: result}}]}], "stats": {...}}. ansible-core ships no JSON callback."""

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: test_json
type: stdout
short_description: task results as one JSON document (hvops.kvm tests only)
description: Prints all task results at the end of the run as JSON.
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'test_json'

    def __init__(self):
        super().__init__()
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({'play': {'name': play.get_name()}, 'tasks': []})

    def _task_entry(self, task):
        tasks = self.plays[-1]['tasks']
        if not tasks or tasks[-1]['task']['uuid'] != task._uuid:
            tasks.append({'task': {'name': task.get_name(), 'uuid': task._uuid}, 'hosts': {}})
        return tasks[-1]

    def _record(self, result, **extra):
        data = dict(result._result)
        data.update(extra)
        self._task_entry(result._task)['hosts'][result._host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        summary = dict((host, stats.summarize(host)) for host in sorted(stats.processed))
        self._display.display(json.dumps({'plays': self.plays, 'stats': summary}, default=str, indent=1))
