# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules, paired with doc fragments of the same
names in plugins/doc_fragments. Each module's whole spec is in its service
(_kvm_instance, _kvm_migrate, _kvm_node_facts)."""

from ansible_collections.hvops.kvm.plugins.module_utils._layout import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import DEFAULT_RUN_AS
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT as DEFAULT_MONITOR_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._spec import (
    ACCELERATORS, DISK_CACHE_MODES, DISK_FORMATS, DISK_INTERFACES, NIC_MODELS, NIC_TYPES)

# doc fragment hvops.kvm.node
HOST_ARGS = dict(
    run_dir=dict(type='path', default=DEFAULT_RUN_DIR),
    state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
    monitor_timeout=dict(type='float', default=DEFAULT_MONITOR_TIMEOUT),
    run_as=dict(type='str', default=DEFAULT_RUN_AS),
)

# doc fragment hvops.kvm.instance_spec
INSTANCE_SPEC_ARGS = dict(
    memory=dict(type='int'),
    vcpus=dict(type='int'),
    machine=dict(type='str'),
    cpu_model=dict(type='str'),
    uuid=dict(type='str'),
    accel=dict(type='str', choices=list(ACCELERATORS)),
    acpi=dict(type='bool'),
    disks=dict(type='list', elements='dict', options=dict(
        path=dict(type='path', required=True),
        format=dict(type='str', choices=list(DISK_FORMATS), default='raw'),
        interface=dict(type='str', choices=list(DISK_INTERFACES), default='virtio'),
        readonly=dict(type='bool', default=False),
        cache=dict(type='str', choices=list(DISK_CACHE_MODES)),
    )),
    kernel=dict(type='str'),
    initrd=dict(type='str'),
    root=dict(type='str'),
    kernel_args=dict(type='str'),
    serial_console=dict(type='bool'),
    vnc_bind_address=dict(type='str'),
    vnc_display=dict(type='int'),
    vnc_tablet=dict(type='bool'),
    vnc_password=dict(type='str', no_log=True),
    nics=dict(type='list', elements='dict', options=dict(
        type=dict(type='str', choices=list(NIC_TYPES), default='user'),
        bridge=dict(type='str'),
        mac=dict(type='str'),
        model=dict(type='str', choices=list(NIC_MODELS), default='virtio'),
    )),
    extra_args=dict(type='list', elements='str'),
    qemu_binary=dict(type='str'),
    guest_agent=dict(type='bool'),
    cloud_init=dict(type='dict', options=dict(
        hostname=dict(type='str'),
        ssh_authorized_keys=dict(type='list', elements='str', no_log=False),
        users=dict(type='list', elements='raw'),
        password_hash=dict(type='str', no_log=True),
        password_user=dict(type='str', no_log=False),
        user_data=dict(type='raw'),
        meta_data=dict(type='raw'),
        network_config=dict(type='raw'),
    )),
)
