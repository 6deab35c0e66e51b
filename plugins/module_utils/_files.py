# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small file helpers: atomic JSON writes and tolerant removal."""

import json
import os
import tempfile


def write_atomic(path, data, mode=0o600):
    """Write bytes or text to path atomically (temp file, fsync, rename)."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_json(path, obj, mode=0o600):
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n', mode)


def read_json(path):
    """The parsed JSON at path, or None when the file does not exist."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def remove_quietly(*paths):
    """Remove files that may or may not exist; return those that were removed."""
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
