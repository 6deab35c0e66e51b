# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_snapshot module: its argument spec and the task."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot import DEFAULT_TIMEOUT, STATES, run_task

ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True),
    snapshot=dict(type='str'),
    state=dict(type='str', choices=list(STATES), default='present'),
    vmstate=dict(type='bool'),
    freeze=dict(type='bool', default=False),
    retention=dict(type='int'),
    timeout=dict(type='int', default=DEFAULT_TIMEOUT),
    lock_timeout=dict(type='int', default=DEFAULT_LOCK_TIMEOUT),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    required_if=[
        ('state', 'present', ['snapshot']),
        ('state', 'absent', ['snapshot']),
        ('state', 'reverted', ['snapshot']),
    ],
)


def run(params, run_command, check_mode=False):
    """(result, diff) of one kvm_snapshot task."""
    return run_task(params, run_command, check_mode=check_mode)
