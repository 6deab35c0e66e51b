#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
---
module: kvm_snapshot
short_description: Snapshots of a QEMU/KVM guest's disks, with or without its RAM, without libvirt
version_added: 0.1.0
description:
  - Creates, reverts to and deletes internal qcow2 snapshots of an instance
    managed by M(hvops.kvm.kvm_instance); M(hvops.kvm.kvm_snapshot_info) lists them.
  - A snapshot covers every writable disk of the instance at once, under the same name;
    read-only disks are left out. Every writable disk must be qcow2 (raw images have no
    internal snapshots) - an instance with a writable raw disk is refused, naming it.
  - A running or paused guest is snapshotted through its QMP monitor. With RAM (O(vmstate))
    QEMU's C(snapshot-save) job pauses the guest while it writes its RAM and device state
    into the first writable disk, then resumes it; reverting such a snapshot
    (C(snapshot-load)) brings the guest back exactly as it was then, running.
    Without RAM the disks are snapshotted together in one QMP C(transaction)
    (C(blockdev-snapshot-internal-sync)), crash-consistent unless O(freeze) is set.
  - A stopped instance's disks are snapshotted, reverted and cleaned with C(qemu-img snapshot),
    never while any QEMU runs the instance; qemu-img's image locks also stop it from
    writing to an image another QEMU holds, and a disk that another running instance of
    this node uses is refused.
  - The task holds the instance's lock from the first look to the last, so
    M(hvops.kvm.kvm_instance) and M(hvops.kvm.kvm_migrate) cannot act on the instance meanwhile.
    An instance in a migration (migrating, incoming, migrated) is refused.
  - Snapshot names that exist on some writable disks and not on others are
    inconsistent; a task naming one is refused, saying which disks have it.
author:
  - hvops.kvm developers (@hvops)
extends_documentation_fragment:
  - hvops.kvm.node
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Makes every check and decision of a real run, without the lock; nothing is written.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the names of the instance's snapshots before and after, oldest first.
options:
  name:
    description:
      - The instance, as M(hvops.kvm.kvm_instance) defined it on this node.
    type: str
    required: true
  snapshot:
    description:
      - The snapshot's name - 1 to 63 letters, digits, C(.), C(_) or C(-), starting with a
        letter or a digit, and not only digits (QEMU and qemu-img would take a number
        for a snapshot id).
    type: str
    required: true
  state:
    description:
      - V(present) creates the snapshot unless it exists (an existing one is left as it is,
        whatever O(vmstate) says).
      - V(absent) deletes it if it exists.
      - V(reverted) reverts the instance to it; always a change. A running guest can be reverted
        only to a snapshot with RAM (the guest then runs on from that moment). A snapshot without
        RAM can only be reverted while the instance is stopped - stop it with
        M(hvops.kvm.kvm_instance) first; the task refuses rather than stopping the guest itself.
        Reverting a stopped instance to a snapshot with RAM reverts its disks only (the next start
        boots from them, as after a power cut at that moment) and warns.
    type: str
    choices: [present, absent, reverted]
    default: present
  vmstate:
    description:
      - Whether a new snapshot also holds the guest's RAM and device state.
      - Not given, a running or paused guest's snapshot holds its RAM (a demanding operator
        wants a snapshot it can go back to exactly), a stopped instance's does not.
        V(true) for a stopped instance is refused (it has no RAM).
      - The guest is paused while QEMU writes its RAM (about 0.2 s for 128 MiB on the
        development machine), and the first writable disk grows by about the RAM's size.
    type: bool
  freeze:
    description:
      - For a disk-only snapshot (O(vmstate=false)) of a running guest, freeze its file systems
        through its guest agent (C(guest-fsfreeze-freeze)) for the snapshot, and thaw them after
        (C(guest-fsfreeze-thaw)) whatever happens, checking that they are thawed and trying again
        up to three times. The guest must run with C(guest_agent) true and its agent answer
        (each agent command waits up to O(monitor_timeout)); else nothing is snapshotted and the
        task fails.
      - Refused with a snapshot with RAM, which is consistent anyway - and would come back frozen.
        Not needed for a stopped instance (ignored).
    type: bool
    default: false
  retention:
    description:
      - With O(state=present), keep only the newest O(retention) snapshots of the instance (by
        date), deleting the older ones, the snapshot O(snapshot) counted among those kept and never deleted.
      - It counts and deletes every snapshot of the instance's disks, not only the ones this module
        made (qcow2 snapshots do not record who made them). Inconsistent snapshots (not on every
        writable disk) are neither counted nor deleted, and named in a warning.
    type: int
  timeout:
    description:
      - Seconds a snapshot job of a running guest (saving, loading or deleting RAM state) may take.
    type: int
    default: 300
  lock_timeout:
    description:
      - Seconds to wait for another run on the same instance to finish.
    type: int
    default: 60
notes:
  - qcow2 internal snapshots have no description field, so there is no description option.
  - Deleting a snapshot frees its clusters inside the image; the image file does not shrink.
seealso:
  - module: hvops.kvm.kvm_snapshot_info
  - module: hvops.kvm.kvm_instance
'''

EXAMPLES = r'''
- name: Snapshot a running guest with its RAM before an upgrade
  hvops.kvm.kvm_snapshot:
    name: web
    snapshot: before-upgrade

- name: Nightly disk-only snapshot, file systems frozen by the guest agent, keeping a week
  hvops.kvm.kvm_snapshot:
    name: db
    snapshot: "nightly-{{ now(utc=true, fmt='%Y%m%d') }}"
    vmstate: false
    freeze: true
    retention: 7

- name: Go back to it (the guest runs on from that moment)
  hvops.kvm.kvm_snapshot:
    name: web
    snapshot: before-upgrade
    state: reverted

- name: Revert to a disk-only snapshot - stop, revert, start
  block:
    - name: Stop the guest
      hvops.kvm.kvm_instance:
        name: db
        state: stopped
    - name: Revert its disks
      hvops.kvm.kvm_snapshot:
        name: db
        snapshot: nightly-20260101
        state: reverted
    - name: Start it again
      hvops.kvm.kvm_instance:
        name: db
        state: started

- name: Delete one
  hvops.kvm.kvm_snapshot:
    name: web
    snapshot: before-upgrade
    state: absent
'''

RETURN = r'''
name:
  description: The instance.
  returned: always
  type: str
  sample: web
snapshot:
  description: The snapshot the task named.
  returned: always
  type: str
  sample: before-upgrade
state:
  description: The instance's state when the task looked (V(running), V(paused), V(stopped) or V(crashed)).
  returned: always
  type: str
  sample: running
actions:
  description: What the task did (in check mode, would do), in order - C(create NAME), C(delete NAME), C(revert NAME).
  returned: always
  type: list
  elements: str
  sample: [create nightly-20260108, delete nightly-20260101]
snapshots:
  description:
    - The instance's snapshots after the task (in check mode, before it), oldest first; the same
      shape for a running and a stopped instance.
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
      description: The disk images that have it (every writable disk, unless it is inconsistent).
      type: list
      elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvops.kvm.plugins.module_utils import _kvm_snapshot as service
from ansible_collections.hvops.kvm.plugins.module_utils._module import call_library, exit_with, runner


def main():
    module = AnsibleModule(argument_spec=service.ARGUMENT_SPEC, **service.MODULE_OPTIONS)
    result, diff = call_library(module, service.run, module.params, runner(module), check_mode=module.check_mode)
    exit_with(module, result, diff)


if __name__ == '__main__':
    main()
