#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_snapshot_info
short_description: List the snapshots of a QEMU/KVM guest's disks, without libvirt
version_added: 0.1.0
description:
  - Lists the internal qcow2 snapshots of an instance managed by M(hvops.kvm.kvm_instance),
    as M(hvops.kvm.kvm_snapshot) makes them - one name across every writable disk.
  - A running or paused guest's are read from its QMP monitor (C(query-block)), a stopped
    instance's with C(qemu-img info); the result has the same shape for both.
  - Nothing on the node is changed, and the instance's lock is not taken.
  - An instance in a migration (migrating, incoming, migrated), or whose monitor does not
    answer, is refused; so is one with a writable disk that is not qcow2.
author:
  - hvops.kvm developers (@hvops)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Changes nothing in any mode.
options:
  name:
    description:
      - The instance, as M(hvops.kvm.kvm_instance) defined it on this node.
    type: str
    required: true
seealso:
  - module: hvops.kvm.kvm_snapshot
'''

EXAMPLES = r'''
- name: List the snapshots of web
  hvops.kvm.kvm_snapshot_info:
    name: web
  register: web_snapshots

- name: Fail unless there is one with RAM to go back to
  ansible.builtin.assert:
    that: web_snapshots.snapshots | selectattr('vmstate') | list | length > 0
'''

RETURN = r'''
name:
  description: The instance.
  returned: always
  type: str
  sample: web
state:
  description: The instance's state when the task looked (V(running), V(paused), V(stopped) or V(crashed)).
  returned: always
  type: str
  sample: running
snapshots:
  description: The instance's snapshots, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The snapshot's name.
      type: str
    date:
      description: When it was taken, ISO 8601 in UTC.
      type: str
      sample: '2026-01-08T02:00:03Z'
    vm_state_size:
      description: Bytes of RAM and device state it holds (0 for a disk-only snapshot).
      type: int
    vmstate:
      description: Whether it holds the guest's RAM (it can be reverted to while the guest runs).
      type: bool
    disks:
      description:
        - The disk images that have it. Fewer than the instance's writable disks means it is inconsistent
          (made by hand on some disks); M(hvops.kvm.kvm_snapshot) refuses to act on it.
      type: list
      elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_snapshot as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.INFO_ARGUMENT_SPEC, **service.INFO_MODULE_OPTIONS)
    result = call_library(module, service.run_info, module.params, runner(module))
    exit_with(module, result)


if __name__ == '__main__':
    main()
