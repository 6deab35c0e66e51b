#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_disk
short_description: Disk images (raw, qcow2) of a QEMU/KVM node - create, grow, convert, report, remove
version_added: 0.1.0
description:
  - Manages one disk image file at O(path) with C(qemu-img), so that guests of
    M(hvops.kvm.kvm_instance) can use it as it is made - owned by the O(run_as) user,
    mode C(0600), unless told otherwise.
  - Creates an empty image of O(size), an image over a O(backing_file), or a copy of
    O(source) converted to O(format). An image that exists is never reformatted, rebased
    or recreated; a conversion happens only when O(path) does not exist yet.
  - Grows an image to O(size). A stopped guest's image grows offline (C(qemu-img resize));
    the image of a running guest grows through that guest's QMP C(block_resize), so the
    guest sees the new size at once and no C(qemu-img) write ever touches an image a
    running guest holds. Shrinking needs O(shrink) and a guest that does not run.
  - An image is in use when an instance defined on this node (in O(state_dir)) has it as
    a disk, or has a qcow2 disk whose backing chain holds it (that use is read-only).
    Paths are compared after resolving symbolic links. Instances defined on other nodes
    (shared storage) are not seen; C(qemu-img)'s own image locks still stop a write to an
    image any live QEMU holds.
  - While it changes an image, the module holds the instance lock of every instance that
    uses it, so that none of them is started, stopped or migrated meanwhile.
  - Every state returns the image as C(disk).
author:
  - hvops.kvm developers (!UNKNOWN)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Runs every check a real run makes and predicts C(changed), the actions and the image's format and size.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the image's state, format, virtual size, backing file, owner, group and mode before and after.
options:
  path:
    description:
      - Absolute path of the image file. It must be normalised (no C(..)), without NUL or
        control characters, and not inside O(run_dir) or O(state_dir).
      - It must not be a symbolic link (its target could be changed under the module, so
        give the real path), a directory or a device; only regular files are managed.
      - Its directory must exist, and every directory above it must be writable only by
        root or by the user the module runs as (or be sticky), as for O(run_dir).
    type: str
    required: true
  state:
    description:
      - C(present) makes sure the image exists with the given O(format), O(size),
        O(backing_file), owner, group and mode.
      - C(absent) removes the image file, unless an instance defined on this node uses it
        (directly or as a backing file; the error names the instance) or a process holds
        its lock. Its backing files are left alone. There is no force for this.
      - To only look at an image, use M(hvops.kvm.kvm_disk_info).
    type: str
    choices: [present, absent]
    default: present
  format:
    description:
      - Image format. For a new image it defaults to C(raw), as the disks of
        M(hvops.kvm.kvm_instance) do.
      - For an existing image it is checked, never applied - an image of another format is
        an error (convert it into another path with O(source)). Without it, the format
        C(qemu-img) detects is taken.
    type: str
    choices: [raw, qcow2]
  size:
    description:
      - Virtual size of the image, as a number of bytes or a text such as C(10G), C(512MiB),
        C(1.5T) (units K, M, G, T, P are binary; C(GB) is refused as ambiguous). It must be a
        whole number of 512-byte sectors, at most 1 PiB.
      - Required to create an image, except from O(source) or over a O(backing_file) (the
        backing file's size is then taken).
      - A larger size than the image has grows it; a smaller one is an error unless O(shrink).
      - With O(source), the converted image is grown to it when it is larger than the source.
    type: raw
  shrink:
    description:
      - Allow O(size) to make an existing image smaller, destroying whatever lies past the
        new end (qcow2 images are shrunk with C(qemu-img resize --shrink)).
      - Never done to the image of a running guest.
    type: bool
    default: false
  backing_file:
    description:
      - Absolute path of an existing image the new qcow2 image is made over (copy on
        write). It needs O(format=qcow2) and O(backing_format).
      - Refused when an instance of this node uses it read-write (an overlay over a
        changing image is corrupt); refused relative (the image would resolve it
        relative to its own directory).
      - For an existing image it is checked against the image's backing file; an image is
        never rebased.
    type: str
  backing_format:
    description:
      - The format of O(backing_file), recorded in the new image (it is checked against
        what C(qemu-img) detects in the file).
    type: str
    choices: [raw, qcow2]
  source:
    description:
      - Absolute path of an existing image to convert into O(path) (C(qemu-img convert -O
        FORMAT)); the result stands alone (no backing file). Done only when O(path) does
        not exist yet, so a rerun changes nothing.
      - Refused when a running guest writes the source (the copy would be torn).
    type: str
  source_format:
    description:
      - The format of O(source); by default the one C(qemu-img) detects. Given, it is
        checked against what C(qemu-img) detects.
    type: str
    choices: [raw, qcow2, vmdk, vdi, vhdx, vpc, qed]
  preallocation:
    description:
      - How much of a new image is allocated up front (C(qemu-img create -o preallocation)),
        and of the added part when an image is grown offline.
      - C(off) allocates nothing; C(metadata) (qcow2 only) writes the qcow2 metadata;
        C(falloc) reserves the space without writing it; C(full) writes zeros. Raw
        images take C(off), C(falloc) and C(full).
      - Not checked on an existing image (qemu-img does not report it).
    type: str
    choices: ['off', metadata, falloc, full]
  cluster_size:
    description:
      - Cluster size of a new qcow2 image, a power of two from 512 bytes to 2M (qemu-img's
        default is 64K). Checked, never changed, on an existing image.
    type: raw
  owner:
    description:
      - Owner of the image (a name or a uid). A new image is given to the O(run_as) user,
        so that QEMU, which opens disks again as that user during a migration, can open it.
      - Given, it is also applied to an existing image; not given, an existing image's
        owner is left as it is.
    type: str
  group:
    description:
      - Group of the image (a name or a gid). A new image gets the primary group of its
        owner. Given, it is also applied to an existing image.
    type: str
  mode:
    description:
      - Permissions of the image, as an octal text such as C("0600") or C("0660") (quote it
        in YAML). A new image gets C(0600). Given, it is also applied to an existing image.
      - Modes that let every user write the image, and setuid, setgid or sticky bits, are
        refused.
    type: raw
  lock_timeout:
    description:
      - Seconds to wait for the lock of each instance that uses the image.
    type: int
    default: 60
  qemu_img:
    description:
      - The C(qemu-img) to run, as an absolute path or a name looked up in C(PATH).
    type: str
notes:
  - Sizes are bytes of the guest's disk (virtual size), not of the file; C(disk.actual_size)
    is what the file takes on the node's storage.
  - The format of an existing image is what C(qemu-img) detects when O(format) is not
    given. A guest can write anything into a raw image, qcow2 headers included; give
    O(format) for images whose format you know.
seealso:
  - module: hvops.kvm.kvm_disk_info
  - module: hvops.kvm.kvm_instance
'''

EXAMPLES = r'''
- name: A 10 GiB qcow2 disk for a guest
  hvops.kvm.kvm_disk:
    path: /var/lib/hvops-kvm-images/web.qcow2
    format: qcow2
    size: 10G

- name: A thin clone over a shared base image (the base is never written)
  hvops.kvm.kvm_disk:
    path: /var/lib/hvops-kvm-images/web2.qcow2
    format: qcow2
    backing_file: /var/lib/hvops-kvm-images/debian-12-base.qcow2
    backing_format: qcow2

- name: Import a downloaded cloud image as a standalone raw disk of 20 GiB
  hvops.kvm.kvm_disk:
    path: /var/lib/hvops-kvm-images/db.raw
    format: raw
    source: /srv/downloads/debian-12-genericcloud-amd64.qcow2
    source_format: qcow2
    size: 20G

- name: Grow a disk, also while its guest runs (the guest sees the new size at once)
  hvops.kvm.kvm_disk:
    path: /var/lib/hvops-kvm-images/web.qcow2
    size: 20G

- name: Remove a disk no instance uses any more
  hvops.kvm.kvm_disk:
    path: /var/lib/hvops-kvm-images/old.qcow2
    state: absent
'''

RETURN = r'''
disk:
  description: The image after the task (in check mode, as predicted).
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
actions:
  description:
    - What the task did (or, in check mode, would do), in order - C(create), C(convert),
      C(resize) (offline), C(block_resize) (through the running guest), C(set_owner),
      C(set_mode), C(remove).
  returned: always
  type: list
  elements: str
  sample: [create]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_disk as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    result, diff = call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode)
    exit_with(module, result, diff)


if __name__ == '__main__':
    main()
