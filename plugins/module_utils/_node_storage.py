# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``storage`` facts of a node: for some directories, the file system
each lies on, with its free and total bytes.

Which directories: those asked for (``storage_paths``: where a copy migration
would put a guest's images, say) and those holding the writable disks of the
node's instances. Read with stat and statvfs only, nothing run or written: a
few system calls per directory. Free space is what an unprivileged writer may
use (``f_bavail``), as the accept phase of a copy migration counts it
(_storage_copy.problems), so the evacuation plan judges a target by the same
numbers.
"""

import os
import stat

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._values import plain_path

MAX_PATHS = 64


def check_paths(value):
    """The ``storage_paths`` option: absolute, normalised directory paths."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PATHS:
        raise ValidationError('storage_paths must be a list of at most %d directories' % MAX_PATHS)
    return sorted(set(plain_path(path, 'storage_paths') for path in value))


def disk_directories(specs):
    """The directories holding the writable disks of ``specs`` (the specs of
    the node's instances; None or malformed ones give nothing), sorted."""
    found = set()
    for spec in specs:
        disks = (spec or {}).get('disks') if isinstance(spec, dict) else None
        for disk in disks if isinstance(disks, list) else ():
            path = disk.get('path') if isinstance(disk, dict) else None
            if isinstance(path, str) and path.startswith('/') and disk.get('readonly') is False:
                found.add(os.path.dirname(os.path.normpath(path)))
    return sorted(found)


def storage_facts(directories):
    """{filesystems: [{device, paths, free_bytes, total_bytes}], missing: [path]}
    for ``directories``: one entry per file system (by device id) holding some
    of them, and the directories that do not exist (or are not directories,
    or cannot be read), each sorted."""
    filesystems = {}
    missing = []
    for directory in sorted(set(directories)):
        try:
            info = os.stat(directory)
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(directory)
            space = os.statvfs(directory)
        except OSError:
            missing.append(directory)
            continue
        entry = filesystems.setdefault(info.st_dev, {
            'device': info.st_dev, 'paths': [],
            'free_bytes': space.f_bavail * space.f_frsize, 'total_bytes': space.f_blocks * space.f_frsize})
        entry['paths'].append(directory)
    return {'filesystems': sorted(filesystems.values(), key=lambda entry: entry['paths'][0]), 'missing': missing}
