# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which instances defined on this node use a disk image.

An instance uses an image when one of its disks is that image, or (with
``backing``) when the image is in the backing chain of one of its qcow2 disks:
that guest reads it, so it is in use read-only. Paths are compared after
``os.path.realpath``, so a symbolic link and its target are the same image.

Where the disks are read from, per instance:

- a running instance (its live QEMU found through Instance.pid, the one
  identification of _identity): the spec of its runtime, the disks that QEMU
  was started with, so ``drive`` is the id it knows them by (``disk%d``, as
  _cmdline.disk_args names them) and QMP commands may name it;
- its stored definition, for every disk the live QEMU does not have (a
  stopped instance, or a definition changed since the start): these are
  reported with ``running`` false, the next start opens them.

Not covered: instances defined on other nodes (an image on shared storage),
and QEMU processes this collection did not start. qemu-img's own image locks
still stop a write to an image any live QEMU holds, which is the last line of
defence for both.
"""

import os

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ImageError
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import backing_files
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import load_definition


def image_users(layout, path, run, backing=True, binary=None):
    """The uses of the image at ``path`` by instances defined in ``layout``,
    sorted by instance and disk: [{instance, disk (index), drive (QEMU drive
    id), readonly, running, backing_of}]. ``backing_of`` is None for a disk
    that is the image itself, else the path of the instance's disk whose
    backing chain holds it (``readonly`` is then true).

    ``backing`` reads the backing chain of each qcow2 disk with one
    ``qemu-img info -U`` per image in it (no image lock taken, so a running
    guest is not disturbed); a chain ends at a file that is missing, and a
    disk that qemu-img cannot open (damaged) has no chain to report. ``binary``: the qemu-img to run. A definition or runtime
    that cannot be read raises StateError: an image is never declared unused
    on a guess.
    """
    target = os.path.realpath(path)
    uses = []
    for name in layout.defined_names():
        instance = Instance(layout, name, run)
        running = instance.pid() is not None
        seen = set()
        sources = []
        runtime = instance.runtime() if running else None
        if runtime is not None:
            sources.append((runtime['spec'], True))
        definition = load_definition(instance.paths)
        if definition is not None:
            sources.append((definition, False))
        for spec, live in sources:
            for index, disk in enumerate(_disks(spec)):
                real = os.path.realpath(disk['path'])
                if real in seen:
                    continue
                seen.add(real)
                use = _use(name, index, disk, real, target, live, run, backing, binary)
                if use is not None:
                    uses.append(use)
    return sorted(uses, key=lambda use: (use['instance'], use['disk'], use['running'] is False))


def _disks(spec):
    """The disks of a stored spec that name a path (others are not ours to judge)."""
    disks = spec.get('disks') if isinstance(spec, dict) else None
    if not isinstance(disks, list):
        return []
    return [disk if isinstance(disk, dict) and isinstance(disk.get('path'), str) else {'path': ''}
            for disk in disks]


def _use(name, index, disk, real, target, live, run, backing, binary):
    record = {'instance': name, 'disk': index, 'drive': 'disk%d' % index,
              'readonly': bool(disk.get('readonly')), 'running': live, 'backing_of': None}
    if not disk['path']:
        return None
    if real == target:
        return record
    if not backing or disk.get('format') != 'qcow2' or not os.path.isfile(real):
        return None
    try:
        chain = backing_files(run, real, force_share=True, fmt='qcow2', binary=binary)
    except ImageError:
        return None
    if any(os.path.realpath(link['path']) == target for link in chain):
        record.update(readonly=True, backing_of=disk['path'])
        return record
    return None
