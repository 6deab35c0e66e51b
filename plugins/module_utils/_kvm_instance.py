# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_instance module: its argument spec and the task."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS, INSTANCE_SPEC_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._instance import DEFAULT_SHUTDOWN_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._policy import RESTART_POLICIES
from ansible_collections.hvops.kvm.plugins.module_utils._reconcile import STATES, STOP_MODES, run_task

ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True),
    state=dict(type='str', choices=list(STATES), default='started'),
    stop_mode=dict(type='str', choices=list(STOP_MODES), default='acpi'),
    force=dict(type='bool', default=False),
    shutdown_timeout=dict(type='int', default=DEFAULT_SHUTDOWN_TIMEOUT),
    lock_timeout=dict(type='int', default=DEFAULT_LOCK_TIMEOUT),
    autostart=dict(type='bool'),
    autostart_order=dict(type='int'),
    autostart_delay=dict(type='int'),
    restart_policy=dict(type='str', choices=list(RESTART_POLICIES)),
    **dict(HOST_ARGS, **INSTANCE_SPEC_ARGS)
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run(params, run_command, check_mode=False):
    """(result, diff) of one kvm_instance task."""
    return run_task(params, run_command, check_mode=check_mode)
