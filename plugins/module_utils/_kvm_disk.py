# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_disk module: its argument spec and the task."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._disk import (
    FORMATS, MODULE_STATES, PREALLOCATION_MODES, SOURCE_FORMATS, run_task)
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT

ARGUMENT_SPEC = dict(
    path=dict(type='str', required=True),
    state=dict(type='str', choices=list(MODULE_STATES), default='present'),
    format=dict(type='str', choices=list(FORMATS)),
    size=dict(type='raw'),
    shrink=dict(type='bool', default=False),
    backing_file=dict(type='str'),
    backing_format=dict(type='str', choices=list(FORMATS)),
    source=dict(type='str'),
    source_format=dict(type='str', choices=list(SOURCE_FORMATS)),
    preallocation=dict(type='str', choices=list(PREALLOCATION_MODES)),
    cluster_size=dict(type='raw'),
    owner=dict(type='str'),
    group=dict(type='str'),
    mode=dict(type='raw'),
    lock_timeout=dict(type='int', default=DEFAULT_LOCK_TIMEOUT),
    qemu_img=dict(type='str'),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    required_together=[('backing_file', 'backing_format')],
    mutually_exclusive=[('source', 'backing_file')],
)


def run(params, run_command, check_mode=False):
    """(result, diff) of one kvm_disk task."""
    return run_task(params, run_command, check_mode=check_mode)
