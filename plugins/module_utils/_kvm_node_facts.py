# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_node_facts module: its argument spec and the facts."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._agent import DEFAULT_TIMEOUT as AGENT_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._nodeinfo import gather
from ansible_collections.hvops.kvm.plugins.module_utils._values import seconds

MAX_AGENT_TIMEOUT = 60.0
ARGUMENT_SPEC = dict(
    gather_subset=dict(type='list', elements='str', default=['all']),
    qemu_binary=dict(type='str'),
    agent_timeout=dict(type='float', default=AGENT_TIMEOUT),
    storage_paths=dict(type='list', elements='str', default=[]),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run(params, run_command, check_mode=False):
    """The module's result: the kvm_node facts (it never changes anything,
    so check mode runs the same)."""
    facts = gather(run_command, run_dir=params['run_dir'], state_dir=params['state_dir'],
                   gather_subset=params['gather_subset'],
                   qemu_binary=params['qemu_binary'], monitor_timeout=params['monitor_timeout'],
                   run_as=params['run_as'], storage_paths=params['storage_paths'],
                   agent_timeout=seconds(params['agent_timeout'], 'agent_timeout', low=0.1, high=MAX_AGENT_TIMEOUT))
    return {'changed': False, 'ansible_facts': {'kvm_node': facts}}
