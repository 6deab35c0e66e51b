# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service of the kvm_disk_info module: its argument spec and the task."""

from ansible_collections.hvops.kvm.plugins.module_utils._argspec import HOST_ARGS
from ansible_collections.hvops.kvm.plugins.module_utils._disk import run_task

ARGUMENT_SPEC = dict(
    path=dict(type='str', required=True),
    qemu_img=dict(type='str'),
    **HOST_ARGS
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run(params, run_command, check_mode=False):
    """The result of one kvm_disk_info task: the image as kvm_disk reports it
    (without kvm_disk's actions), nothing changed."""
    result, _diff = run_task(dict(params, state='info'), run_command, check_mode=check_mode)
    result.pop('actions', None)
    return result
