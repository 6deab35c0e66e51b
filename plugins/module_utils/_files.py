# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small file helpers: atomic JSON writes and tolerant removal."""

import json
import os
import tempfile

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError

# No state file of ours comes near this; a bigger one is refused unread.
MAX_JSON_BYTES = 4 * 1024 * 1024


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


def read_json(path, what='file'):
    """The JSON object at path, or None when the file does not exist. A file
    that is too big, not JSON or not an object raises StateError."""
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError('cannot read %s %s: %s' % (what, path, err.strerror))
    if len(raw) > MAX_JSON_BYTES:
        raise StateError('%s %s is larger than %d bytes; refusing to read it' % (what, path, MAX_JSON_BYTES))
    try:
        data = json.loads(raw.decode('utf-8'))
    except ValueError as err:
        raise StateError('%s %s is damaged (not JSON: %s); repair or remove it' % (what, path, err))
    if not isinstance(data, dict):
        raise StateError('%s %s is not in a format this collection understands (a JSON %s, not an'
                         ' object); repair or remove it' % (what, path, type(data).__name__))
    return data


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
