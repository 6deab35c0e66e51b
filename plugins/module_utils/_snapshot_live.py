# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a running guest, through its QMP monitor (QEMU 6.0 and later).

Measured on QEMU 7.2:

* ``snapshot-save``, ``snapshot-load`` and ``snapshot-delete`` are jobs
  (_jobs) and take block *node names* (``#block123``, from ``query-block``),
  not drive ids: ``disk0`` makes the job fail with "No block device node".
  snapshot-save pauses the guest while it writes its RAM (about 0.2 s for
  128 MiB under TCG here) and refuses a tag that exists on any device.
* A snapshot-load that fails (a missing tag, a disk-only snapshot) leaves the
  guest paused in run state ``restore-vm``; a successful one resumes it.
  snapshot-delete of a missing tag succeeds.
* ``blockdev-snapshot-internal-sync`` (disk-only) takes the drive id or the
  node name; in a ``transaction`` it is all or nothing across disks.

QEMU's own listing (``query-block``: each drive's image ``snapshots``) is
read instead of qemu-img, which cannot open an image a running QEMU holds
without ``-U``.
"""

import contextlib
import os

from ansible_collections.hvops.kvm.plugins.module_utils._agent import AgentError, AgentSession
from ansible_collections.hvops.kvm.plugins.module_utils._errors import MonitorError, StateError
from ansible_collections.hvops.kvm.plugins.module_utils._jobs import new_job_id, run_job
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import snapshot_list
from ansible_collections.hvops.kvm.plugins.module_utils._snapshot_rules import combine

THAW_ATTEMPTS = 3


def live_disks(qmp, disks, instance=None):
    """The running QEMU's drives for ``disks`` ([(index, path)], from the
    spec it runs with), matched by image path: [{index, path, device, node,
    snapshots}] in the same order."""
    by_path = {}
    for block in qmp.execute('query-block') or []:
        inserted = block.get('inserted') if isinstance(block, dict) else None
        if not isinstance(inserted, dict) or not isinstance(inserted.get('file'), str):
            continue
        by_path.setdefault(os.path.realpath(inserted['file']), (block, inserted))
    found = []
    for index, path in disks:
        block, inserted = by_path.get(os.path.realpath(path), (None, None))
        if block is None:
            raise StateError('disk %d (%s) is not attached to the running QEMU; refusing to snapshot only'
                             ' some of its disks' % (index, path), instance=instance)
        if inserted.get('drv') != 'qcow2' or inserted.get('ro'):
            raise StateError('disk %d (%s) runs as %s%s in QEMU, not as a writable qcow2 image'
                             % (index, path, inserted.get('drv'), ' read-only' if inserted.get('ro') else ''),
                             instance=instance)
        image = inserted.get('image') or {}
        found.append({'index': index, 'path': path, 'device': block.get('device'),
                      'node': inserted.get('node-name'),
                      'snapshots': snapshot_list(image.get('snapshots') or [],
                                                 "QEMU's query-block about %s" % path)})
    return found


def live_snapshots(drives):
    return combine([(drive['path'], drive['snapshots']) for drive in drives])


def _nodes(drives):
    return [drive['node'] for drive in drives]


def save(qmp, drives, name, timeout):
    """A snapshot with the guest's RAM, kept in the first disk."""
    run_job(qmp, 'snapshot-save', {'job-id': new_job_id('hvops-snapshot-save'), 'tag': name,
                                   'vmstate': drives[0]['node'], 'devices': _nodes(drives)}, timeout)


def load(qmp, drives, name, timeout, instance=None):
    """Revert the guest to a snapshot with RAM: its disks, RAM and devices."""
    try:
        run_job(qmp, 'snapshot-load', {'job-id': new_job_id('hvops-snapshot-load'), 'tag': name,
                                       'vmstate': drives[0]['node'], 'devices': _nodes(drives)}, timeout)
    except MonitorError as err:
        status = None
        try:
            status = (qmp.execute('query-status') or {}).get('status')
        except MonitorError:  # the first error is the one to report
            pass
        raise StateError('reverting to snapshot %s failed: %s; the guest is now %s (a failed load leaves it'
                         ' paused: its RAM may be partly restored, so it is not resumed: revert again, or'
                         ' restart it with hvops.kvm.kvm_instance state=restarted)'
                         % (name, err.msg, status or 'in an unknown state'),
                         instance=instance)


def delete(qmp, drives, name, timeout):
    """Delete a snapshot from the drives that have it."""
    run_job(qmp, 'snapshot-delete', {'job-id': new_job_id('hvops-snapshot-delete'), 'tag': name,
                                     'devices': _nodes(drives)}, timeout)


def disk_only(qmp, drives, name):
    """A disk-only snapshot of every drive at once (one transaction)."""
    qmp.execute('transaction', {'actions': [
        {'type': 'blockdev-snapshot-internal-sync', 'data': {'device': drive['node'], 'name': name}}
        for drive in drives]})


@contextlib.contextmanager
def frozen(socket_path, instance=None, timeout=None, socat=None):
    """The guest's file systems frozen by its agent for the body; thawed
    afterwards whatever happens (a failed freeze is thawed too: it may have
    frozen some). A thaw that fails THAW_ATTEMPTS times raises AgentError
    saying the guest may still be frozen."""
    session = AgentSession(socket_path, instance=instance, timeout=timeout, socat=socat)
    session.open()
    try:
        session.execute('guest-fsfreeze-freeze')
        yield
    finally:
        thaw(session, socket_path, instance, timeout, socat)


def thaw(session, socket_path, instance=None, timeout=None, socat=None):
    last = None
    for _attempt in range(THAW_ATTEMPTS):
        try:
            if session is None:
                session = AgentSession(socket_path, instance=instance, timeout=timeout, socat=socat).open()
            session.execute('guest-fsfreeze-thaw')
            if session.execute('guest-fsfreeze-status') == 'thawed':
                session.close()
                return
            last = 'it still says its file systems are frozen'
        except AgentError as err:
            last = err.msg
        if session is not None:
            session.close()
            session = None
    raise AgentError('the guest agent did not thaw the file systems after %d attempts (%s): THE GUEST MAY STILL'
                     ' BE FROZEN; thaw it with guest-fsfreeze-thaw' % (THAW_ATTEMPTS, last), instance=instance)
