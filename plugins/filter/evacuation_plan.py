# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hvops.kvm.evacuation_plan filter: where each running guest of a node
goes when the node is drained. Pure: facts in, plan out."""

DOCUMENTATION = r'''
name: evacuation_plan
short_description: Plan where the running guests of a node go when it is drained
version_added: 0.1.0
author:
  - hvops.kvm developers (!UNKNOWN)
description:
  - Takes the C(kvm_node) facts of the node to drain (M(hvops.kvm.kvm_node_facts) with the
    C(instances) subset) and what is known of each candidate target, and returns a placement
    of every running guest, or why a guest stays.
  - Guests are placed biggest first (memory, then name), each on the usable target with the
    most memory left once the guests already placed in this plan are counted, so the load
    spreads and the result does not depend on the order the targets are given in.
  - A target takes a guest when it has the memory (see O(margin_mb) and O(reserve_mb)), knows
    the guest's machine type, runs the same or a newer QEMU, has KVM when the guest uses it,
    has the guest's bridges and sees its files, and runs no instance of that name.
  - Only guests in state C(running) are moved. Stopped, shut-down and crashed instances run
    nothing and are left alone. A guest that is paused, incoming, migrating, migrated, busy
    (another run holds its lock) or unknown stays, with the reason; so does a running guest
    that fits on no target.
  - With O(storage=copy) (live migration with local disks) a target must also take each copied
    (writable) disk of the guest, at its path mapped through O(storage_map) - the image must not
    exist there yet, its directory must, and the file system of that directory must have free
    at least the virtual sizes of all the copied disks the plan puts on it, this guest's and
    those of the guests placed before it, plus 64 MiB - the rule of the C(accept) phase, on the
    target's C(storage) facts. Read-only disks are not copied - they must be on the target.
  - The plan only predicts. The target's own pre-checks (the C(accept) phase of
    M(hvops.kvm.kvm_migrate)) still decide when the guest is moved.
positional: _input, targets
options:
  _input:
    description:
      - The C(kvm_node) facts of the node to drain, with the C(instances) subset.
    type: dict
    required: true
  targets:
    description:
      - What is known of each candidate target, keyed by inventory hostname.
      - C(facts) - the target's C(kvm_node) facts (C(memory), C(hypervisor) and C(instances)
        subsets; with O(storage=copy) also C(storage), gathered with the target directories
        of the copied disks in C(storage_paths)). A target without them is not used.
      - C(error) - why its facts could not be gathered (unreachable, module failed); the target
        is not used.
      - C(memory_limit_mb) - at most this many MiB for all guests of the target, those it runs
        already (C(memory.committed_mb)) included; null for no limit. The role takes it from the
        target's host variable C(kvm_memory_limit_mb).
      - C(missing_files) - guest files (disks, kernels) known to be absent on the target. With
        O(storage=copy) the copied disks are not looked for.
      - C(present_files) - paths known to exist on the target. With O(storage=copy), a copied
        disk whose mapped path is one of them keeps the guest off that target.
      - C(missing_bridges) - bridges known to be absent on the target.
    type: dict
    required: true
  requirements:
    description:
      - What each guest needs, keyed by instance name - the C(requirements) the C(prepare) phase
        of M(hvops.kvm.kvm_migrate) returns (C(memory_mb), C(machine), C(qemu_version), C(accel),
        C(files), C(bridges)).
      - A running guest without an entry is planned from its facts alone (memory and machine type).
    type: dict
    default: {}
  errors:
    description:
      - Why the requirements of a guest could not be read (C(prepare) failed), keyed by instance
        name. Such a guest stays.
    type: dict
    default: {}
  margin_mb:
    description: MiB counted for each guest beyond its memory (its QEMU's own needs).
    type: int
    default: 128
  reserve_mb:
    description: MiB left free on every target, whatever its guests.
    type: int
    default: 0
  parallel:
    description: Moves per batch; the moves are cut into batches of this size, in plan order.
    type: int
    default: 1
  node_name:
    description: Name of the node, for the C(summary) lines.
    type: str
    default: the node
  storage:
    description:
      - How the guests' disks reach the targets, as the O(hvops.kvm.kvm_migrate#module:storage)
        option of their migration says - C(shared) (the same files everywhere) or C(copy)
        (the writable disks copied to the target while the guest runs).
    type: str
    choices: [shared, copy]
    default: shared
  storage_map:
    description:
      - With O(storage=copy), where the targets keep the copied images - source directory to
        target directory, as the O(hvops.kvm.kvm_migrate#module:storage_map) of the migrations.
    type: dict
    default: {}
  disks:
    description:
      - With O(storage=copy), what the C(prepare) phase of M(hvops.kvm.kvm_migrate) (run with
        C(storage=copy)) said of each guest's disks, keyed by instance name - its C(disks) list
        (C(index), C(path), C(format), C(virtual_size), C(readonly)).
      - A running guest without an entry, or whose entry cannot be copied (no writable disk, a
        malformed description), stays, with the reason.
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Gather the facts of the node and of the targets
  hvops.kvm.kvm_node_facts:
    gather_subset: [memory, hypervisor, instances]
  delegate_to: "{{ item }}"
  delegate_facts: true
  loop: [kvm1, kvm2, kvm3]

- name: Plan the evacuation of kvm1 to kvm2 and kvm3, of which kvm3 may hold 2 GiB of guests
  ansible.builtin.set_fact:
    plan: >-
      {{ hostvars['kvm1'].kvm_node | hvops.kvm.evacuation_plan(
           {'kvm2': {'facts': hostvars['kvm2'].kvm_node},
            'kvm3': {'facts': hostvars['kvm3'].kvm_node, 'memory_limit_mb': 2048}},
           reserve_mb=1024, node_name='kvm1') }}

- name: Show it
  ansible.builtin.debug:
    msg: "{{ plan.summary }}"

# plan.moves => [{instance: db, target: kvm2, memory_mb: 4096, need_mb: 4224, batch: 0},
#                {instance: web, target: kvm3, memory_mb: 1024, need_mb: 1152, batch: 1}]
# plan.stays => [] (plan.complete is true)

- name: Plan a drain whose guests' local disks are copied to /srv/images on the targets
  ansible.builtin.set_fact:
    plan: >-
      {{ hostvars['kvm1'].kvm_node | hvops.kvm.evacuation_plan(
           {'kvm2': {'facts': hostvars['kvm2'].kvm_node}},
           requirements=prepared_requirements, disks=prepared_disks,
           storage='copy', storage_map={'/var/lib/images': '/srv/images'}, node_name='kvm1') }}
'''

RETURN = r'''
_value:
  description: The plan.
  type: dict
  contains:
    node:
      description: O(node_name).
      type: str
    complete:
      description: Every guest that needs moving has a place (C(stays) is empty).
      type: bool
    moves:
      description:
        - One entry per guest to move, in the order to move them (biggest first) -
          C(instance), C(target), C(memory_mb), C(need_mb) (memory plus O(margin_mb)),
          C(copy_mb) (MiB of virtual size of its copied disks; 0 with shared storage) and
          C(batch) (index into C(batches)).
      type: list
      elements: dict
    batches:
      description: The instance names of C(moves), cut into lists of at most O(parallel).
      type: list
      elements: list
    stays:
      description:
        - Guests that need moving and have no place - C(instance), C(state), C(memory_mb), C(reason)
          (one sentence) and C(targets) (per target, why it cannot take the guest; empty when the
          guest's state alone keeps it).
      type: list
      elements: dict
    left_alone:
      description: Instances that run nothing (stopped, shutdown, crashed) - C(instance) and C(state).
      type: list
      elements: dict
    targets:
      description:
        - Per target - C(usable), C(reason) (why not usable, else null), C(capacity_mb) (MiB it can
          give guests - allocatable memory, within C(memory_limit_mb) less what its guests have,
          less O(reserve_mb)), C(planned_mb), C(left_mb), C(instances) (placed here by the plan)
          and C(disks) (per file system the plan copies disks to - C(directory), C(free_mb) and
          C(planned_mb), the virtual sizes placed there; empty with shared storage).
      type: dict
    storage:
      description: O(storage).
      type: str
    summary:
      description: The plan in plain lines, for display.
      type: list
      elements: str
'''

import posixpath

from ansible.errors import AnsibleFilterError

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._migration_checks import MEMORY_MARGIN_MB, target_problems
from ansible_collections.hvops.kvm.plugins.module_utils._states import IDLE
from ansible_collections.hvops.kvm.plugins.module_utils._storage_copy import (
    MIB, STORAGE_MODES, check_storage_map, described_copies, room_needed)

MOVABLE = 'running'
STATE_REASONS = {
    'paused': 'is paused; only running guests are migrated (resume it, or stop it)',
    'incoming': 'is the target of an unfinished migration; run recover (playbooks/recover.yml) first',
    'migrating': 'is being migrated by another run',
    'migrated': 'has moved away but its QEMU is still here; run recover (playbooks/recover.yml) first',
    'unknown': 'is in an unknown state (its monitor did not answer)',
}


def _int(value, what):
    if isinstance(value, bool):
        raise AnsibleFilterError('evacuation_plan: %s must be an integer, not %r' % (what, value))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError('evacuation_plan: %s must be an integer, not %r' % (what, value))


def _mapping(value, what, optional=False):
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise AnsibleFilterError('evacuation_plan: %s must be a dictionary, not %s' % (what, type(value).__name__))
    return value


def _mib_up(size):
    return -(-size // MIB)


class _Target:
    """A candidate target, and the memory and (for copied disks) the space of
    each file system left on it as guests are placed."""

    def __init__(self, name, info, reserve_mb, copy=False):
        self.name = name
        info = _mapping(info, 'targets[%r]' % name)
        self.facts = info.get('facts') or None
        self.limit = info.get('memory_limit_mb')
        self.missing_files = set(info.get('missing_files') or ())
        self.present_files = set(info.get('present_files') or ())
        self.missing_bridges = set(info.get('missing_bridges') or ())
        self.instances = []
        self.planned = 0
        self.reason = None
        self.capacity = 0
        # With copied disks: {directory: device} and the missing directories
        # from the storage facts; {device: [free, planned, first directory]}.
        self.devices, self.missing_dirs, self.space = {}, set(), {}
        if info.get('error'):
            self.reason = str(info['error'])
        elif self.facts is None:
            self.reason = 'no facts'
        elif 'memory' not in self.facts:
            self.reason = 'no memory facts (gather the memory subset)'
        elif copy and not isinstance(self.facts.get('storage'), dict):
            self.reason = 'no storage facts (gather the storage subset, with the target directories in storage_paths)'
        else:
            self._size(reserve_mb)
            self._check_hypervisor()
            if copy:
                self._read_storage(self.facts['storage'])

    def _read_storage(self, storage):
        for entry in storage.get('filesystems') or ():
            entry = _mapping(entry, 'storage.filesystems entry of %s' % self.name)
            device = str(entry.get('device'))
            free = _int(entry.get('free_bytes'), 'storage free_bytes of %s' % self.name)
            paths = [path for path in entry.get('paths') or () if isinstance(path, str)]
            for path in paths:
                self.devices[path] = device
            if paths:
                self.space.setdefault(device, [free, 0, sorted(paths)[0]])
        self.missing_dirs = set(path for path in storage.get('missing') or () if isinstance(path, str))

    def _size(self, reserve_mb):
        memory = self.facts['memory']
        capacity = _int(memory.get('allocatable_mb'), 'memory.allocatable_mb of %s' % self.name)
        if self.limit is not None:
            limit = _int(self.limit, 'memory_limit_mb of %s' % self.name)
            capacity = min(capacity, limit - _int(memory.get('committed_mb') or 0, 'memory.committed_mb'))
        self.capacity = max(capacity - reserve_mb, 0)

    def _check_hypervisor(self):
        hypervisor = self.facts.get('hypervisor')
        if hypervisor is None:
            return
        if not (hypervisor.get('socat') or {}).get('present', True):
            self.reason = 'socat is not installed'
        elif hypervisor.get('qemu') is None:
            self.reason = 'no QEMU found'

    @property
    def usable(self):
        return self.reason is None

    @property
    def left(self):
        return self.capacity - self.planned

    def problems(self, name, req, margin_mb, copies=None):
        """(why this target cannot take the guest (empty: it can), the bytes
        its copied disks take on each file system): the rules the target's
        own accept phase applies, to what the facts say. ``copies``: the
        guest's copied disks (_storage_copy.described_copies), None when
        storage is shared."""
        copied = set(copy['source_path'] for copy in copies or ())
        disk_problems, use = self._copy_problems(copies) if copies else ([], {})
        hypervisor = self.facts.get('hypervisor')
        qemu = (hypervisor or {}).get('qemu')
        offer = {
            'copy': (self.facts.get('instances') or {}).get(name),
            'memory_mb': self.left, 'memory_word': 'left', 'margin_mb': margin_mb,
            'qemu': {'version': [_int(part, 'qemu.version_info of %s' % self.name)
                                 for part in qemu.get('version_info') or ()],
                     'machines': qemu.get('machines')} if qemu else None,
            'kvm': (hypervisor.get('kvm') or {}) if hypervisor is not None else None,
            'missing_bridges': self.missing_bridges,
            'file_problems': ['%s not found' % p for p in req.get('files') or ()
                              if p in self.missing_files and p not in copied] + disk_problems,
        }
        return target_problems(name, req, offer), use

    def _copy_problems(self, copies):
        """The accept phase's rules for copied disks (_storage_copy.problems)
        on the storage facts: each image new, in a directory that exists, and
        on each file system room for the virtual sizes of all the copies the
        plan puts there, this guest's included, plus the margin."""
        found, use = [], {}
        for copy in copies:
            directory = posixpath.dirname(copy['path'])
            if copy['path'] in self.present_files:
                found.append('disk %d: %s already exists there; a copy migration only writes new images'
                             % (copy['index'], copy['path']))
            elif directory in self.missing_dirs:
                found.append('disk %d: the directory %s does not exist there' % (copy['index'], directory))
            elif directory not in self.devices:
                found.append('disk %d: the storage facts do not cover %s (gather them with it in storage_paths)'
                             % (copy['index'], directory))
            else:
                entry = use.setdefault(self.devices[directory], [directory, 0])
                entry[1] += copy['size']
        for device, (directory, size) in sorted(use.items()):
            free, planned, _first = self.space[device]
            if free - planned < room_needed(size):
                found.append('not enough disk space (needs %d MiB on %s of %s, %d MiB %s)' % (
                    _mib_up(room_needed(size)), directory, self.name, max(free - planned, 0) // MIB,
                    'free' if not planned else 'left (%d MiB free, %d planned for other guests\' disks)'
                    % (free // MIB, _mib_up(planned))))
        return found, dict((device, size) for device, (_directory, size) in use.items())

    def take(self, name, need, use):
        """Place a guest here: its memory, and its copies' bytes per file system."""
        self.planned += need
        self.instances.append(name)
        for device, size in use.items():
            self.space[device][1] += size

    def as_dict(self):
        return {
            'usable': self.usable,
            'reason': self.reason,
            'capacity_mb': self.capacity,
            'planned_mb': self.planned,
            'left_mb': self.left,
            'instances': list(self.instances),
            'disks': [{'directory': directory, 'free_mb': free // MIB, 'planned_mb': _mib_up(planned)}
                      for free, planned, directory in sorted(self.space.values(), key=lambda entry: entry[2])
                      if planned],
        }


def evacuation_plan(node, targets, requirements=None, errors=None, margin_mb=MEMORY_MARGIN_MB, reserve_mb=0,
                    parallel=1, node_name='the node', storage='shared', storage_map=None, disks=None):
    """Plan the evacuation of a node; see DOCUMENTATION."""
    node = _mapping(node, 'the node\'s facts')
    if not isinstance(node.get('instances'), dict):
        raise AnsibleFilterError('evacuation_plan: the node\'s facts have no instances '
                                 '(gather the instances subset of hvops.kvm.kvm_node_facts)')
    targets = _mapping(targets, 'targets')
    requirements = _mapping(requirements, 'requirements', optional=True)
    errors = _mapping(errors, 'errors', optional=True)
    margin_mb = _int(margin_mb, 'margin_mb')
    reserve_mb = _int(reserve_mb, 'reserve_mb')
    parallel = _int(parallel, 'parallel')
    if parallel < 1:
        raise AnsibleFilterError('evacuation_plan: parallel must be at least 1, not %d' % parallel)
    if margin_mb < 0 or reserve_mb < 0:
        raise AnsibleFilterError('evacuation_plan: margin_mb and reserve_mb must not be negative')
    node_name = str(node_name)
    if storage not in STORAGE_MODES:
        raise AnsibleFilterError('evacuation_plan: storage must be one of %s, not %r' % (', '.join(STORAGE_MODES), storage))
    copy = storage == 'copy'
    try:
        storage_map = check_storage_map(storage_map)
    except ValidationError as err:
        raise AnsibleFilterError('evacuation_plan: %s' % err)
    disks = _mapping(disks, 'disks', optional=True)

    pool = [_Target(name, targets[name], reserve_mb, copy) for name in sorted(targets)]
    usable = [target for target in pool if target.usable]
    moves, stays, left_alone, movable = [], [], [], []
    for name in sorted(node['instances']):
        facts = _mapping(node['instances'][name], 'instances[%r]' % name)
        state = facts.get('state')
        if state in IDLE:
            left_alone.append({'instance': name, 'state': state})
        elif facts.get('busy'):
            stays.append(_stay(name, facts, 'another run is working on it (it holds the instance\'s lock)'))
        elif state != MOVABLE:
            stays.append(_stay(name, facts, STATE_REASONS.get(state, 'is %s, not running' % state)))
        elif name in errors and name not in requirements:
            stays.append(_stay(name, facts, 'its requirements could not be read: %s' % errors[name]))
        elif copy and name not in disks:
            stays.append(_stay(name, facts, 'its disks were not described (the prepare phase must run with'
                                            ' storage: copy)'))
        else:
            req = dict(requirements.get(name) or {})
            req.setdefault('memory_mb', facts.get('memory_mb'))
            req.setdefault('machine', facts.get('machine'))
            req['memory_mb'] = _int(req['memory_mb'], 'memory_mb of %s' % name)
            try:
                copies = described_copies(name, disks[name], storage_map) if copy else None
            except ValidationError as err:
                stays.append(_stay(name, facts, 'its disks cannot be copied: %s' % err.msg))
                continue
            movable.append((name, facts, req, copies))

    # Biggest first; each on the target with the most memory left.
    for name, facts, req, copies in sorted(movable, key=lambda entry: (-entry[2]['memory_mb'], entry[0])):
        need = req['memory_mb'] + margin_mb
        refusals = {}
        candidates = []
        for target in usable:
            problems, use = target.problems(name, req, margin_mb, copies)
            if problems:
                refusals[target.name] = problems
            else:
                candidates.append((target, use))
        if not candidates:
            stay = _stay(name, facts, _nowhere(refusals, pool), memory_mb=req['memory_mb'])
            stay['targets'] = refusals
            stays.append(stay)
            continue
        chosen, use = sorted(candidates, key=lambda entry: (-entry[0].left, entry[0].name))[0]
        chosen.take(name, need, use)
        moves.append({'instance': name, 'target': chosen.name, 'memory_mb': req['memory_mb'],
                      'need_mb': need, 'copy_mb': _mib_up(sum(c['size'] for c in copies or ())),
                      'batch': len(moves) // parallel})

    stays.sort(key=lambda stay: stay['instance'])
    batches = [[move['instance'] for move in moves[start:start + parallel]]
               for start in range(0, len(moves), parallel)]
    plan = {
        'node': node_name,
        'complete': not stays,
        'moves': moves,
        'batches': batches,
        'stays': stays,
        'left_alone': left_alone,
        'storage': storage,
        'targets': dict((target.name, target.as_dict()) for target in pool),
    }
    plan['summary'] = _summary(plan, parallel, margin_mb)
    return plan


def _stay(name, facts, reason, memory_mb=None):
    return {'instance': name, 'state': facts.get('state'),
            'memory_mb': memory_mb if memory_mb is not None else facts.get('memory_mb'),
            'reason': reason, 'targets': {}}


def _nowhere(refusals, pool):
    if not pool:
        return 'fits on no target: there are no targets'
    parts = ['%s: %s' % (name, ', '.join(problems)) for name, problems in sorted(refusals.items())]
    parts += ['%s: not usable (%s)' % (target.name, target.reason) for target in pool if not target.usable]
    return 'fits on no target (%s)' % '; '.join(parts)


def _summary(plan, parallel, margin_mb):
    moves, stays = plan['moves'], plan['stays']
    lines = ['Evacuation of %s: %d guest(s) to move, %d to stay, %d left alone (not running)%s'
             % (plan['node'], len(moves), len(stays), len(plan['left_alone']),
                '; batches of %d' % parallel if parallel > 1 else '')]
    for move in moves:
        lines.append('%s (%d MiB%s) -> %s' % (move['instance'], move['memory_mb'],
                                              ', disks %d MiB copied' % move['copy_mb'] if move['copy_mb'] else '',
                                              move['target']))
    for stay in stays:
        lines.append('%s stays on %s: %s' % (stay['instance'], plan['node'], stay['reason']))
    for idle in plan['left_alone']:
        lines.append('%s is %s: left alone' % (idle['instance'], idle['state']))
    for name, target in sorted(plan['targets'].items()):
        if target['usable']:
            lines.append('target %s: %d MiB for guests, %d planned (%s), %d left'
                         % (name, target['capacity_mb'], target['planned_mb'],
                            ', '.join(target['instances']) or 'none', target['left_mb']))
            for disk in target['disks']:
                lines.append('target %s: %d MiB free on %s, %d planned for copied disks'
                             % (name, disk['free_mb'], disk['directory'], disk['planned_mb']))
        else:
            lines.append('target %s: not usable (%s)' % (name, target['reason']))
    if moves or stays:
        lines.append('(each guest counts its memory plus %d MiB%s)' % (
            margin_mb, '; the copied disks their virtual sizes, plus %d MiB per file system'
            % (room_needed(0) // MIB) if plan['storage'] == 'copy' else ''))
    return lines


class FilterModule:
    """hvops.kvm evacuation filters."""

    def filters(self):
        return {'evacuation_plan': evacuation_plan}
