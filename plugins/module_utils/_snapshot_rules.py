# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rules of an instance's snapshots. Pure.

A snapshot of an instance is a qcow2 internal snapshot of the same name on
each of its writable disks (read-only disks are left out). One taken with the
guest's RAM (``vmstate``) keeps the RAM and device state in the first
writable disk (vm-state-size > 0 there, 0 on the others). Names are checked
here before anything is built from them: qemu-img and QEMU look a snapshot up
by id *or* name, so a purely numeric name could hit another snapshot's id, and
a name starting with ``-`` would be read by qemu-img as an option.
"""

import re
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError

SNAPSHOT_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
MAX_SNAPSHOT_NAME = 63
MAX_RETENTION = 1000


def validate_snapshot_name(name, instance=None):
    """A snapshot name: 1 to 63 letters, digits, '.', '_' or '-', starting with
    a letter or digit, and not only digits."""
    if not isinstance(name, str) or not name:
        raise ValidationError('a snapshot name is required', instance=instance)
    if len(name) > MAX_SNAPSHOT_NAME or not SNAPSHOT_NAME.fullmatch(name) or name.isdigit():
        raise ValidationError(
            'invalid snapshot name %r: use 1 to %d letters, digits, ".", "_" or "-", starting with a'
            ' letter or digit and not only digits (QEMU would take a number for a snapshot id)'
            % (name, MAX_SNAPSHOT_NAME), instance=instance)
    return name


def validate_retention(value, instance=None):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RETENTION:
        raise ValidationError('retention must be a whole number from 1 to %d (the newest snapshots to'
                              ' keep), got %r' % (MAX_RETENTION, value), instance=instance)
    return value


def snapshot_disks(spec, instance=None):
    """[(index, path)] of the disks a snapshot covers: every writable disk, all
    of which must be qcow2 (raw images have no internal snapshots)."""
    disks = []
    for index, disk in enumerate(spec.get('disks') or []):
        if disk.get('readonly'):
            continue
        if disk.get('format') != 'qcow2':
            raise ValidationError('disk %d (%s) is %s: only qcow2 images have internal snapshots; every'
                                  ' writable disk of a snapshotted instance must be qcow2 (make it read-only,'
                                  ' or convert it with qemu-img convert -O qcow2)'
                                  % (index, disk.get('path'), disk.get('format')), instance=instance)
        disks.append((index, disk['path']))
    if not disks:
        raise ValidationError('has no writable disk: there is nothing to snapshot', instance=instance)
    return disks


def iso_date(epoch):
    """ISO 8601 in UTC, to the second (None stays None)."""
    if epoch is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def combine(per_disk):
    """The instance's snapshots from each disk's: ``per_disk`` is [(path,
    [entry])] in disk order (the first holds the RAM state). Returns
    [{name, date, vm_state_size, vmstate, disks, complete}] sorted oldest
    first (then by name); ``complete`` is whether every disk has it, ``date``
    the first disk's that has it (epoch seconds)."""
    seen = {}
    for path, entries in per_disk:
        for item in entries:
            record = seen.get(item['name'])
            if record is None:
                record = seen[item['name']] = {'name': item['name'], 'date': item['date'],
                                               'vm_state_size': 0, 'disks': []}
            if path not in record['disks']:
                record['disks'].append(path)
            record['vm_state_size'] = max(record['vm_state_size'], item['vm_state_size'])
    snapshots = []
    for record in seen.values():
        record['vmstate'] = record['vm_state_size'] > 0
        record['complete'] = len(record['disks']) == len(per_disk)
        snapshots.append(record)
    return sorted(snapshots, key=lambda record: (record['date'], record['name']))


def shown(snapshots):
    """Snapshots as a result shows them: dates in ISO 8601 UTC."""
    return [{'name': record['name'], 'date': iso_date(record['date']), 'vm_state_size': record['vm_state_size'],
             'vmstate': record['vmstate'], 'disks': list(record['disks'])} for record in snapshots]


def find(snapshots, name, instance=None):
    """The snapshot called ``name``, or None; one that some disks have and
    others not is refused, naming both."""
    for record in snapshots:
        if record['name'] == name:
            if not record['complete']:
                raise StateError('snapshot %s is inconsistent: it exists on %s but not on every writable disk;'
                                 ' refusing to act on it (delete it from those disks with qemu-img snapshot -d'
                                 ' while the instance is stopped, or give another name)'
                                 % (name, ', '.join(record['disks'])), instance=instance)
            return record
    return None


def retention_victims(snapshots, keep, spare=None):
    """Names of the snapshots to delete so that only the newest ``keep``
    complete ones remain (oldest first). ``spare`` (the snapshot a task
    names) is never one of them and counts among those kept. Incomplete
    snapshots are neither counted nor deleted."""
    complete = [record['name'] for record in snapshots if record['complete']]
    others = [name for name in complete if name != spare]
    room = keep - (1 if spare in complete else 0)
    if room < 0:
        room = 0
    excess = len(others) - room
    return others[:excess] if excess > 0 else []
