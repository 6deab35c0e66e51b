# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The services of the kvm_snapshot and kvm_snapshot_info modules: their
argument specs and the task (kvm_snapshot_info's is state list)."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot import DEFAULT_TIMEOUT, LIST, STATES, run_task

ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True),
    snapshot=dict(type='str', required=True),
    state=dict(type='str', choices=list(STATES), default='present'),
    vmstate=dict(type='bool'),
    freeze=dict(type='bool', default=False),
    retention=dict(type='int'),
    timeout=dict(type='int', default=DEFAULT_TIMEOUT),
    lock_timeout=dict(type='int', default=DEFAULT_LOCK_TIMEOUT),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run(params, run_command, check_mode=False):
    """(result, diff) of one kvm_snapshot task."""
    return run_task(params, run_command, check_mode=check_mode)


INFO_ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True),
    **HOST_ARGS
)
INFO_MODULE_OPTIONS = dict(supports_check_mode=True)


def run_info(params, run_command):
    """The result of one kvm_snapshot_info task (it changes nothing)."""
    result, _diff = run_task(dict(params, state=LIST, snapshot=None), run_command, check_mode=True)
    del result['actions'], result['snapshot']
    return result
