# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way to call qemu-img: find it, run it, read what it says about an
image.

Every call is an argv list through the ``run`` callable (never a shell). What
``qemu-img info`` prints is treated like any input from outside: the image's
header is written by whoever wrote the image (a guest, for a raw one), so
every field is type-checked and every size bounded before anything reads it.

qemu-img takes QEMU's image locks: a write operation on an image that a live
QEMU holds fails ("Failed to get "write" lock"), and so does ``info`` unless
it is given ``-U`` (force share), which reads the header without the lock;
``image_info`` passes it only when asked (``force_share``), for an image a
running guest holds.
"""

import json
import os
import re
import shutil

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    ImageError, MissingBinaryError, ValidationError)

QEMU_IMG = 'qemu-img'
# Sizes and counts past these are not from an image qemu-img made: refused.
MAX_BYTES = (1 << 63) - 1
MAX_CHAIN = 256
MAX_SNAPSHOTS = 65536
MAX_OUTPUT = 16 * 1024 * 1024
MAX_TEXT = 4096
# A format name as qemu-img prints it (raw, qcow2, vmdk, luks, ...).
FORMAT_PATTERN = re.compile(r'[a-z0-9_-]{1,32}')
NANOSECONDS = 1000000000


def find_qemu_img(path=None):
    """Absolute path of qemu-img (or of ``path``: absolute, or a name looked
    up on PATH); MissingBinaryError when there is none."""
    binary = path or QEMU_IMG
    found = binary if os.path.isabs(binary) else shutil.which(binary)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise MissingBinaryError('%s not found or not executable: install the qemu-utils package' % binary)
    return found


def run_qemu_img(run, argv_tail, what='qemu-img', binary=None):
    """qemu-img's standard output for ``qemu-img ARGV_TAIL``; an exit status
    other than 0 raises ImageError carrying its standard error. ``what``
    names the operation in the message ("resizing /srv/a.qcow2")."""
    if not isinstance(argv_tail, (list, tuple)) or not all(isinstance(word, str) for word in argv_tail):
        raise ValidationError('qemu-img arguments must be a list of strings')
    argv = [find_qemu_img(binary)] + list(argv_tail)
    rc, out, err = run(argv)
    if rc != 0:
        said = (err or out or '').strip()
        raise ImageError('%s failed (qemu-img exit status %s): %s' % (what, rc, said or 'no message'),
                         stderr=said, rc=rc)
    return out or ''


def image_info(run, path, force_share=False, fmt=None, binary=None, chain=True):
    """What an image is, from ``qemu-img info --output=json --backing-chain``:

    path, format, virtual_size, actual_size (bytes on disk, None when
    qemu-img cannot tell), cluster_size (None for raw), backing_chain (the
    backing images from the nearest down, each {path, format}), snapshots
    ([{name, id, vm_state_size, date (epoch seconds, float), vm_clock_nsec}])
    and dirty (qcow2's dirty flag).

    ``fmt`` opens the image as that format instead of letting qemu-img guess
    it from its content (a raw image whose guest wrote a qcow2 header would
    otherwise read as qcow2). ``force_share`` adds ``-U``: needed for an
    image a running guest holds, and only then (without the lock the header
    may be in the middle of a change). Missing backing files fail here: the
    whole chain must open. Without ``chain`` only the image itself is opened
    (``backing_chain`` then holds at most its own backing file).
    """
    if not isinstance(path, str) or not os.path.isabs(path) or '\0' in path:
        raise ValidationError('an image path must be absolute, got %r' % (path,))
    argv = ['info', '--output=json'] + (['--backing-chain'] if chain else [])
    if force_share:
        argv.append('-U')
    if fmt:
        argv += ['-f', _format(fmt, 'format')]
    out = run_qemu_img(run, argv + [path], what='reading %s' % path, binary=binary)
    return parse_info(out, path)


def parse_info(text, path):
    """The dict ``image_info`` returns, from the JSON text of ``qemu-img info
    --output=json --backing-chain`` about ``path``; ImageError for anything
    that is not the shape qemu-img prints."""
    if not isinstance(text, str) or len(text) > MAX_OUTPUT:
        raise ImageError('qemu-img info about %s printed too much, or nothing' % path)
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ImageError('qemu-img info about %s did not print JSON: %s' % (path, err))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or len(data) > MAX_CHAIN:
        raise ImageError('qemu-img info about %s printed an unexpected shape (not 1 to %d images)'
                         % (path, MAX_CHAIN))
    entries = [_entry(entry, path) for entry in data]
    top = entries[0]
    chain = []
    referrer = path
    for entry, below in zip(entries, entries[1:] + [None]):
        backing = entry['backing'] or (below['filename'] if below else None)
        if backing is None:
            break
        backing = _resolved(backing, referrer)
        chain.append({'path': backing, 'format': below['format'] if below else entry['backing_format']})
        referrer = backing
    return {
        'path': path,
        'format': top['format'],
        'virtual_size': top['virtual_size'],
        'actual_size': top['actual_size'],
        'cluster_size': top['cluster_size'],
        'backing_chain': chain,
        'snapshots': top['snapshots'],
        'dirty': top['dirty'],
    }


def backing_files(run, path, force_share=False, fmt=None, binary=None):
    """The backing chain of the image at ``path`` ([{path, format}], nearest
    first), read one image at a time so that a missing file ends the walk
    instead of failing it: the files above it are still reported. A format
    the header does not record is left for qemu-img to guess."""
    chain = []
    seen = set([os.path.realpath(path)])
    current, current_fmt = path, fmt
    while len(chain) < MAX_CHAIN:
        info = image_info(run, current, force_share=force_share, fmt=current_fmt, binary=binary, chain=False)
        if not info['backing_chain']:
            return chain
        link = info['backing_chain'][0]
        chain.append(link)
        real = os.path.realpath(link['path'])
        if real in seen or not os.path.isfile(real):
            return chain
        seen.add(real)
        current, current_fmt = link['path'], link['format']
    return chain


def _resolved(backing, referrer):
    """A backing file name as qemu-img opens it: relative to the image that names it."""
    if not os.path.isabs(backing):
        backing = os.path.join(os.path.dirname(referrer), backing)
    return os.path.normpath(backing)


def _entry(entry, path):
    """One image of the chain, checked: the fields parse_info uses."""
    origin = 'qemu-img info about %s' % path
    if not isinstance(entry, dict):
        raise ImageError('%s printed an image that is not an object' % origin)
    return {
        'filename': _text(entry.get('filename'), 'filename', origin),
        'format': _format(entry.get('format'), 'format', origin),
        'virtual_size': _bytes(entry.get('virtual-size'), 'virtual-size', origin),
        'actual_size': _bytes(entry.get('actual-size'), 'actual-size', origin, optional=True),
        'cluster_size': _bytes(entry.get('cluster-size'), 'cluster-size', origin, optional=True),
        'backing': _text(entry.get('full-backing-filename', entry.get('backing-filename')),
                         'backing-filename', origin, optional=True),
        'backing_format': _format(entry['backing-filename-format'], 'backing-filename-format', origin)
        if entry.get('backing-filename-format') is not None else None,
        'snapshots': snapshot_list(entry.get('snapshots', []), origin),
        'dirty': _flag(entry.get('dirty-flag', False), 'dirty-flag', origin),
    }


def snapshot_list(value, origin):
    """An image's internal snapshots, checked, from the JSON both qemu-img
    info and QMP's query-block print (QAPI's SnapshotInfo: name, id, date-sec,
    date-nsec, vm-state-size, vm-clock-sec, vm-clock-nsec): [{name, id,
    vm_state_size, date (epoch seconds), vm_clock_nsec}]. ``origin`` says who
    printed it, for the ImageError of anything of another shape."""
    if not isinstance(value, list) or len(value) > MAX_SNAPSHOTS:
        raise ImageError('%s printed snapshots that are not a list of at most %d' % (origin, MAX_SNAPSHOTS))
    snapshots = []
    for item in value:
        if not isinstance(item, dict):
            raise ImageError('%s printed a snapshot that is not an object' % origin)
        snapshots.append({
            'name': _text(item.get('name'), 'snapshot name', origin, empty=True),
            'id': _text(item.get('id'), 'snapshot id', origin),
            'vm_state_size': _bytes(item.get('vm-state-size', 0), 'vm-state-size', origin),
            'date': _bytes(item.get('date-sec'), 'date-sec', origin)
            + _bytes(item.get('date-nsec', 0), 'date-nsec', origin) / float(NANOSECONDS),
            'vm_clock_nsec': _bytes(item.get('vm-clock-sec', 0), 'vm-clock-sec', origin) * NANOSECONDS
            + _bytes(item.get('vm-clock-nsec', 0), 'vm-clock-nsec', origin),
        })
    return snapshots


def _bytes(value, field, origin, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BYTES:
        raise ImageError('%s printed %s %r, not a number from 0 to %d' % (origin, field, value, MAX_BYTES))
    return value


def _text(value, field, origin, optional=False, empty=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not empty) or len(value) > MAX_TEXT or '\0' in value:
        raise ImageError('%s printed %s %r, not a text of at most %d characters'
                         % (origin, field, value, MAX_TEXT))
    return value


def _flag(value, field, origin):
    if not isinstance(value, bool):
        raise ImageError('%s printed %s %r, not true or false' % (origin, field, value))
    return value


def _format(value, field, origin=None):
    if not isinstance(value, str) or not FORMAT_PATTERN.fullmatch(value):
        if origin is None:
            raise ValidationError('%s must be an image format name such as raw or qcow2, got %r' % (field, value))
        raise ImageError('%s printed %s %r, not a format name' % (origin, field, value))
    return value
