# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hvops.kvm.copied_disks filter: where a copy migration puts the guests'
writable disks on a target. Pure."""

DOCUMENTATION = r'''
name: copied_disks
short_description: Where a copy migration puts the guests' writable disks on a target
version_added: 0.1.0
author:
  - hvops.kvm developers (!UNKNOWN)
description:
  - Takes what the C(prepare) phase of M(hvops.kvm.kvm_migrate) (run with C(storage=copy)) said
    of the disks of some guests, keyed by instance name, and returns one entry per disk a copy
    migration copies (each writable one), with the path it gets on the target through
    O(storage_map) - the same mapping the target's C(accept) phase applies (the longest source
    directory that holds the disk; a disk under none keeps its path).
  - Read-only disks are not copied and are not listed.
  - A guest whose description cannot be copied (no writable disk, a malformed entry) is left out;
    the C(hvops.kvm.evacuation_plan) filter says why it stays.
  - The role hvops.kvm.evacuate uses it to know which directories to gather the targets'
    C(storage) facts for, and which paths to look for on them.
positional: _input, storage_map
options:
  _input:
    description:
      - The C(disks) list of each guest's C(prepare) result (C(index), C(path), C(format),
        C(virtual_size), C(readonly)), keyed by instance name.
    type: dict
    required: true
  storage_map:
    description:
      - Source directory to target directory, as the O(hvops.kvm.kvm_migrate#module:storage_map)
        of the migrations.
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: The directories the copied disks of the prepared guests go to
  ansible.builtin.set_fact:
    target_dirs: >-
      {{ prepared_disks | hvops.kvm.copied_disks({'/var/lib/images': '/srv/images'})
         | map(attribute='directory') | unique | list }}

# prepared_disks => {web: [{index: 0, path: /var/lib/images/web.qcow2, format: qcow2,
#                           virtual_size: 10737418240, readonly: false},
#                          {index: 1, path: /iso/tools.iso, format: raw, virtual_size: 1048576, readonly: true}]}
# target_dirs => [/srv/images]
'''

RETURN = r'''
_value:
  description: One entry per copied disk, by instance name, then disk index.
  type: list
  elements: dict
  contains:
    instance:
      description: The guest.
      type: str
    index:
      description: The disk's index in the guest's spec.
      type: int
    source_path:
      description: The disk's path on the source.
      type: str
    path:
      description: Its path on the target.
      type: str
    directory:
      description: The directory of C(path).
      type: str
    size:
      description: Its virtual size in bytes.
      type: int
'''

import posixpath

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._storage_copy import check_storage_map, described_copies


def copied_disks(disks, storage_map=None):
    """The copied disks of the guests described in ``disks``; see DOCUMENTATION."""
    if not isinstance(disks, dict):
        raise AnsibleFilterError('copied_disks: the disks must be a dictionary of instance name to the prepare'
                                 ' phase\'s disks, not %s' % type(disks).__name__)
    try:
        storage_map = check_storage_map(storage_map)
    except ValidationError as err:
        raise AnsibleFilterError('copied_disks: %s' % err)
    found = []
    for name in sorted(disks):
        try:
            copies = described_copies(name, disks[name], storage_map)
        except ValidationError:
            continue
        found += [{'instance': name, 'index': copy['index'], 'source_path': copy['source_path'],
                   'path': copy['path'], 'directory': posixpath.dirname(copy['path']), 'size': copy['size']}
                  for copy in copies]
    return found


class FilterModule:
    """hvops.kvm storage filters."""

    def filters(self):
        return {'copied_disks': copied_disks}
