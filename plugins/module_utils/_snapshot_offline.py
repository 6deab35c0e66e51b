# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a stopped instance's disks, with qemu-img (_qemu_img).

Only ever called for an instance whose QEMU is gone, under its lock; qemu-img
takes QEMU's image locks besides, so a write to an image that another live
QEMU holds fails. Every image is opened as qcow2 by name (``--image-opts
driver=qcow2,...``): ``qemu-img snapshot`` has no ``-f``, and a format
guessed from an image's content is the guest's to choose.

Measured on qemu-img 7.2: ``snapshot -c`` with a name that exists already
succeeds and makes a second snapshot of that name (hence the existence check
of the caller), ``-a`` and ``-d`` of a missing name fail.
"""

import os

from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import opt_value
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ImageError, StateError
from ansible_collections.hvops.kvm.plugins.module_utils._image_use import image_users
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import image_info, run_qemu_img
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot_rules import combine


def image_opts(path):
    return 'driver=qcow2,file.driver=file,file.filename=%s' % opt_value(path)


def offline_disks(run, disks, layout, name):
    """[{index, path, snapshots}] of a stopped instance's disks, read with
    qemu-img info; a disk that a running instance uses too is refused."""
    found = []
    for index, path in disks:
        for use in image_users(layout, path, run, backing=True):
            if use['instance'] != name and use['running']:
                raise StateError('disk %d (%s) is in use by the running instance %s; refusing to change its'
                                 ' snapshots' % (index, path, use['instance']), instance=name)
        if not os.path.isfile(path):
            raise StateError('disk %d (%s) does not exist' % (index, path), instance=name)
        info = image_info(run, path, fmt='qcow2', chain=False)
        found.append({'index': index, 'path': path, 'snapshots': info['snapshots']})
    return found


def offline_snapshots(images):
    return combine([(image['path'], image['snapshots']) for image in images])


def _snapshot(run, flag, name, path, what):
    run_qemu_img(run, ['snapshot', '--image-opts', '-q', flag, name, image_opts(path)], what=what)


def create(run, images, name, instance=None):
    """The snapshot on every disk, or on none: the disks done before one that
    fails lose it again."""
    done = []
    try:
        for image in images:
            _snapshot(run, '-c', name, image['path'], 'creating snapshot %s of %s' % (name, image['path']))
            done.append(image)
    except ImageError:
        for image in done:
            try:
                _snapshot(run, '-d', name, image['path'], 'removing snapshot %s again' % name)
            except ImageError:
                pass
        raise


def revert(run, images, name):
    for image in images:
        _snapshot(run, '-a', name, image['path'], 'reverting %s to snapshot %s' % (image['path'], name))


def delete(run, images, name):
    for image in images:
        _snapshot(run, '-d', name, image['path'], 'deleting snapshot %s of %s' % (name, image['path']))
