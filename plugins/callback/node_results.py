# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hvops.kvm.node_results stdout callback: every host's result of a run as
one JSON document, for the hvops.kvm.guests inventory plugin's gather source."""

from __future__ import annotations

DOCUMENTATION = r'''
name: node_results
type: stdout
short_description: Every host's last task result as one JSON document
version_added: 0.2.0
author:
  - hvops.kvm developers (!UNKNOWN)
description:
  - "Prints, at the end of the run, one JSON object - C(hosts), a mapping of each host to its last
    C(status) (C(ok), C(failed), C(unreachable) or C(skipped)) and C(result) - and nothing else
    on standard output."
  - The P(hvops.kvm.guests#inventory) inventory plugin runs M(hvops.kvm.kvm_node_facts) ad hoc
    with it (O(hvops.kvm.guests#inventory:source=gather)); it is not meant for playbooks.
  - Results hidden with C(no_log) stay hidden.
'''

import json

from ansible.plugins.callback import CallbackBase


def _result_of(result):
    """The result mapping of a task result (the result property from ansible-core 2.19)."""
    data = getattr(result, 'result', None)
    if not isinstance(data, dict):
        data = result._result
    return data


def _host_of(result):
    host = getattr(result, 'host', None) or result._host
    return host.get_name()


class CallbackModule(CallbackBase):

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'hvops.kvm.node_results'

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._hosts = {}

    def _record(self, result, status):
        # _dump_results drops Ansible's internal keys and honours no_log; read it back.
        self._hosts[_host_of(result)] = {'status': status,
                                         'result': json.loads(self._dump_results(_result_of(result), indent=None))}

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, 'failed')

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, 'unreachable')

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, 'skipped')

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({'hosts': self._hosts}, sort_keys=True))
