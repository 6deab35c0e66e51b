#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_disk_info
short_description: What a disk image of a QEMU/KVM node is, and which instances use it
version_added: 0.1.0
description:
  - Reports one disk image at O(path) as M(hvops.kvm.kvm_disk) returns it - format, virtual
    and actual size, backing chain, cluster size, snapshots, owner, group and mode - and
    which instances defined on this node use it, directly or through a backing chain.
  - An image that does not exist is reported with C(disk.exists=false), not as an error.
  - The image is read with C(qemu-img info); one a running guest holds is read without
    taking its lock (C(-U)). Nothing on the node is changed.
author:
  - hvops.kvm developers (!UNKNOWN)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; check mode reports the same.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  path:
    description:
      - Absolute path of the image file, with the same rules as for M(hvops.kvm.kvm_disk)
        (normalised, no symbolic link, directory or device).
    type: str
    required: true
  qemu_img:
    description:
      - The C(qemu-img) to run, as an absolute path or a name looked up in C(PATH).
    type: str
notes:
  - The format is the one C(qemu-img) detects in the file.
seealso:
  - module: hvops.kvm.kvm_disk
'''

EXAMPLES = r'''
- name: What is this image, and who uses it?
  hvops.kvm.kvm_disk_info:
    path: /var/lib/hvops-kvm-images/web.qcow2
  register: web_disk

- name: Stop when a running guest uses it
  ansible.builtin.assert:
    that: web_disk.disk.used_by | selectattr('running') | list | length == 0
'''

RETURN = r'''
disk:
  description: The image as it is.
  returned: always
  type: dict
  contains:
    path:
      description: The image's path, normalised.
      type: str
    exists:
      description: Whether the image file exists.
      type: bool
    format:
      description: Image format; null when there is no image.
      type: str
      sample: qcow2
    virtual_size:
      description: The size the guest sees, in bytes.
      type: int
      sample: 10737418240
    actual_size:
      description: Bytes the file takes on the node's storage (null in a check-mode prediction of a new image).
      type: int
    cluster_size:
      description: Cluster size in bytes (qcow2; null for raw).
      type: int
      sample: 65536
    backing_chain:
      description: The backing files, nearest first, each with C(path) and C(format).
      type: list
      elements: dict
      sample: [{path: /var/lib/hvops-kvm-images/debian-12-base.qcow2, format: qcow2}]
    snapshots:
      description: How many internal snapshots the image holds.
      type: int
    dirty:
      description: The qcow2 dirty flag (the image was not closed cleanly).
      type: bool
    owner:
      description: Owner's name (or uid when it has none).
      type: str
    group:
      description: Group's name (or gid when it has none).
      type: str
    mode:
      description: Permissions, in octal.
      type: str
      sample: '0600'
    qemu_user_can_open:
      description:
        - Whether the O(run_as) user can open the image read-write (what
          M(hvops.kvm.kvm_instance) requires of a read-write disk); null when that user does
          not exist or nothing was looked at (a check-mode prediction).
      type: bool
    in_use:
      description: Whether an instance defined on this node uses the image.
      type: bool
    used_by:
      description:
        - Each use of the image by an instance of this node - C(instance), C(running) (its
          QEMU runs with this disk), C(disk) (index in its disks), C(drive) (QEMU's drive id),
          C(readonly), and C(backing_of) (the instance's disk whose backing chain holds the
          image; null for the disk itself).
      type: list
      elements: dict
      sample: [{instance: web, running: true, disk: 0, drive: disk0, readonly: false, backing_of: null}]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_disk_info as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    exit_with(module, call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode))


if __name__ == '__main__':
    main()
