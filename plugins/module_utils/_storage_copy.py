# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration with local disks (``storage: copy``): what each node does
with the guest's writable disks while its RAM moves.

The sequence (libvirt's ``--copy-storage-all``, Proxmox's
``--with-local-disks``), each step in the phase that owns it:

prepare   source  each disk's format and virtual size, read from the
                  guest's own QEMU (``query-block``: never qemu-img on an
                  image a running guest writes)
accept    target  every writable disk given a path here (``storage_map``),
                  refused unless the file is new, its directory exists and
                  the file systems have room; images of the same format and
                  virtual size made; the paused incoming QEMU opens them and
                  exports each through its NBD server, writable, under TLS
                  when the migration uses TLS
migrate   source  an NBD client node and a ``blockdev-mirror`` job (sync
                  full) per disk; once every job is ready the RAM migration
                  starts with ``pause-before-switchover``: when QEMU has
                  stopped the guest for the switch-over, the mirror jobs are
                  completed (every block written so far is on the target),
                  and only then does the migration go on to send the device
                  state. Any failure cancels the jobs and the migration: the
                  source's QEMU resumes the guest on its own untouched disks
finalize  target  success: the NBD server stopped before the guest resumes;
                  failure: the QEMU killed and the images it was given removed
confirm   source  success: the source's images stay unless asked to go

The images a target made are listed in its runtime (``migration.storage``),
and only those are ever removed by a rollback.
"""

import os
import re
import shutil
import stat
import time

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MigrationError, MonitorError, MonitorTimeout, ValidationError)
from ansible_collections.hvops.kvm.plugins.module_utils._jobs import dismiss, job_info
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import first_free_port
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import run_qemu_img
from ansible_collections.hvops.kvm.plugins.module_utils._values import plain_path

STORAGE_MODES = ('shared', 'copy')
# Names this module gives things in QEMU: jobs and NBD client nodes on the
# source, exports on the target (an export is named after the guest's drive).
JOB_PREFIX = 'hvops-mirror-'
NODE_PREFIX = 'hvops-nbd-'
EXPORT_PATTERN = re.compile(r'disk(\d{1,3})')
MAX_DISK_BYTES = 1 << 50
MAX_MAP_ENTRIES = 64
# As kvm_disk makes images: the QEMU user's, and nobody else's.
IMAGE_MODE = 0o600
# Room left on a target file system beyond the images' virtual sizes.
SPACE_MARGIN = 64 * 1024 * 1024
POLL_INTERVAL = 0.25
FINISH_WAIT = 30.0
# How long an abort waits for cancelled jobs: one whose NBD requests hang on a
# cut link or a stopped target ends only once the connection breaks (the
# target's QEMU killed by the rollback, or the link back); the guest runs on
# meanwhile, and a later phase dismisses the job (leftovers).
ABORT_WAIT = 3.0
MIB = 1024 * 1024
# blockdev-mirror's buffer per job (QEMU's default is 16 MiB): the data in
# flight, in requests of up to a 16th of it. Copying 1 GiB over loopback (QEMU
# 7.2, a 2-CPU VM) took about 1 s either way when all went well, as long as
# qemu-img convert into the same export; but with the default's 1 MiB requests
# 13 runs of 47 took 2.4-3.7 s, with 64 MiB's 4 MiB requests none of 32 took
# over 1.8 s (bench/storage_migration.py runs both side by side). The source's
# QEMU holds the buffer while the job runs.
MIRROR_BUFFER = 64 * MIB
BLOCK_JOB_EVENTS = ('BLOCK_JOB_READY', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_ERROR',
                    'JOB_STATUS_CHANGE')


def drive_id(index):
    return 'disk%d' % index


def copied(spec):
    """The indexes of the spec's disks a copy migration copies: the writable ones
    (a read-only disk must already be on the target, as with shared storage)."""
    return [index for index, disk in enumerate(spec['disks']) if not disk['readonly']]


# -- prepare (source) -------------------------------------------------------------
def describe(qmp, spec):
    """[{index, path, format, virtual_size, readonly}] of the spec's disks, as
    the guest's QEMU has them open."""
    found = dict((entry.get('device'), entry) for entry in qmp.execute('query-block') or [])
    disks = []
    for index, disk in enumerate(spec['disks']):
        image = ((found.get(drive_id(index)) or {}).get('inserted') or {}).get('image') or {}
        disks.append({'index': index, 'path': disk['path'], 'format': disk['format'],
                      'virtual_size': image.get('virtual-size'), 'readonly': disk['readonly']})
    return disks


# -- accept (target) --------------------------------------------------------------
def check_storage_map(value):
    """{source directory: target directory}, both absolute and plain."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_MAP_ENTRIES:
        raise ValidationError('storage_map must be a dictionary of at most %d source directories to target'
                              ' directories' % MAX_MAP_ENTRIES)
    checked = {}
    for source, target in value.items():
        checked[plain_path(source, 'storage_map')] = plain_path(target, 'storage_map')
    return checked


def mapped_path(path, storage_map):
    """Where a source disk at ``path`` goes on the target: under the target
    directory of the longest source directory that holds it, else ``path``."""
    best = None
    for source in storage_map:
        if path.startswith(source.rstrip('/') + '/') and (best is None or len(source) > len(best)):
            best = source
    if best is None:
        return path
    return os.path.join(storage_map[best], path[len(best.rstrip('/')) + 1:])


def plan(name, spec, definition, disks, storage_map):
    """(spec, definition, copies) for a copy migration: the source's spec and
    definition with each copied disk's path mapped, and [{index, drive,
    source_path, path, format, size}]. ``disks`` is what the source's prepare
    said of its disks, checked here as untrusted input."""
    indexes = copied(spec)
    if not indexes:
        raise ValidationError('storage: copy, but the guest has no writable disk to copy', instance=name)
    if not isinstance(disks, list) or len(disks) != len(spec['disks']):
        raise ValidationError('disks must be the prepare phase\'s list of the guest\'s %d disks'
                              % len(spec['disks']), instance=name)
    copies = []
    moved = {}
    for index in indexes:
        given = disks[index]
        disk = spec['disks'][index]
        if not isinstance(given, dict) or given.get('index') != index or given.get('path') != disk['path'] \
                or given.get('format') != disk['format']:
            raise ValidationError('disks[%d] does not describe the guest\'s disk %d (%s, %s)'
                                  % (index, index, disk['path'], disk['format']), instance=name)
        size = given.get('virtual_size')
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_DISK_BYTES or size % 512:
            raise ValidationError('disks[%d] virtual_size must be a positive multiple of 512 bytes up to'
                                  ' %d, got %r' % (index, MAX_DISK_BYTES, size), instance=name)
        target = mapped_path(disk['path'], storage_map)
        moved[disk['path']] = target
        copies.append({'index': index, 'drive': drive_id(index), 'source_path': disk['path'],
                       'path': target, 'format': disk['format'], 'size': size})
    if len(set(moved.values())) != len(moved):
        raise ValidationError('storage_map puts two disks at the same path', instance=name)
    return _moved(spec, moved), (_moved(definition, moved) if definition else definition), copies


def described_copies(name, disks, storage_map):
    """The copies (as ``plan`` makes them) of a guest known only by what its
    prepare phase said of its disks (``disks``, untrusted): how a planner off
    the node (the evacuation plan) sees a copy migration."""
    if not isinstance(disks, list) or not all(isinstance(disk, dict) for disk in disks):
        raise ValidationError('disks must be the prepare phase\'s list of the guest\'s disks', instance=name)
    spec = {'disks': []}
    for index, disk in enumerate(disks):
        spec['disks'].append({'path': plain_path(disk.get('path'), 'disks[%d] path' % index),
                              'format': disk.get('format'), 'readonly': disk.get('readonly') is not False})
    return plan(name, spec, None, disks, storage_map)[2]


def _moved(spec, moved):
    out = dict(spec)
    out['disks'] = [dict(disk, path=moved.get(disk['path'], disk['path'])) if not disk['readonly'] else disk
                    for disk in spec['disks']]
    return out


def problems(copies, layout, qemu_user=None):
    """Why this node cannot take the copies, as sentences (empty: it can);
    ``qemu_user`` must be able to reach the images' directories."""
    found = []
    needed = {}
    for copy in copies:
        path = copy['path']
        directory = os.path.dirname(path)
        for own in (layout.run_dir, layout.state_dir):
            if own and (path + '/').startswith(own.rstrip('/') + '/'):
                found.append('disk %d would go to %s, inside %s' % (copy['index'], path, own))
        if os.path.lexists(path):
            found.append('disk %d: %s already exists here; a copy migration only writes new images (map'
                         ' the source\'s directory elsewhere with storage_map, or remove it)'
                         % (copy['index'], path))
        elif not os.path.isdir(directory):
            found.append('disk %d: the directory %s does not exist here' % (copy['index'], directory))
        elif qemu_user is not None and not qemu_user.can_search(directory):
            found.append('disk %d: the QEMU user %s cannot reach %s' % (copy['index'], qemu_user.name, directory))
        else:
            device = os.stat(directory).st_dev
            entry = needed.setdefault(device, [directory, 0])
            entry[1] += copy['size']
    for directory, size in needed.values():
        info = os.statvfs(directory)
        free = info.f_bavail * info.f_frsize
        if free < room_needed(size):
            found.append('the file system of %s has %d MiB free; the copied disks need %d MiB (plus %d MiB)'
                         % (directory, free // MIB, size // MIB, SPACE_MARGIN // MIB))
    return found


def room_needed(size):
    """Bytes a file system must have free to take copied images of ``size``
    bytes (their virtual sizes) in all: the rule of ``problems``, which the
    evacuation plan applies to a target's storage facts."""
    return size + SPACE_MARGIN


def create_images(run, copies, qemu_user):
    """Make each copy's image (format and virtual size of the source's),
    usable by the QEMU user; the paths made. Nothing is left if one fails."""
    made = []
    try:
        for copy in copies:
            try:
                run_qemu_img(run, ['create', '-q', '-f', copy['format'], copy['path'], str(copy['size'])],
                             what='making %s for disk %d' % (copy['path'], copy['index']))
            finally:
                if os.path.lexists(copy['path']):
                    made.append(copy['path'])
            info = os.lstat(copy['path'])
            if not stat.S_ISREG(info.st_mode):
                raise MigrationError('%s is not a regular file after qemu-img create' % copy['path'])
            if qemu_user is not None:
                os.chown(copy['path'], qemu_user.uid, qemu_user.gid)
            os.chmod(copy['path'], IMAGE_MODE)
    except BaseException:
        remove_images(made)
        raise
    return made


def remove_images(paths):
    """Remove the images a target made for a copy; those already gone are skipped."""
    for path in paths or []:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def created(runtime):
    """The images this node made for an incoming copy migration (its runtime)."""
    storage = ((runtime or {}).get('migration') or {}).get('storage') or {}
    return [path for path in storage.get('created') or [] if isinstance(path, str) and path.startswith('/')]


def export(qmp, copies, address, ports, tls_creds=None, tls_authz=None):
    """Start the NBD server on the first free port of ``ports`` (low, high)
    and export each copy's drive, writable; the port."""
    low, high = ports
    tls = {}
    if tls_creds:
        tls['tls-creds'] = tls_creds
        if tls_authz:
            tls['tls-authz'] = tls_authz

    def server(port):
        return dict(tls, addr={'type': 'inet', 'data': {'host': address, 'port': str(port)}})
    try:
        port, _busy = first_free_port(qmp, 'nbd-server-start', server, low, high)
    except MonitorError as err:
        raise MigrationError('cannot start the NBD server on %s: %s' % (address, err.desc or err.msg))
    if port is None:
        raise MigrationError('every port of %d-%d on %s is in use (NBD server)' % (low, high, address))
    nodes = dict((entry.get('device'), (entry.get('inserted') or {}).get('node-name'))
                 for entry in qmp.execute('query-block') or [])
    for copy in copies:
        qmp.execute('block-export-add', {'type': 'nbd', 'id': copy['drive'], 'node-name': nodes[copy['drive']],
                                         'name': copy['drive'], 'writable': True})
    return port


def unexport(qmp):
    """Stop the NBD server (its exports with it); one not running is fine."""
    try:
        qmp.execute('nbd-server-stop')
    except MonitorError as err:
        if 'not running' not in (err.desc or ''):
            raise


# -- migrate (source) -------------------------------------------------------------
def check_nbd(name, nbd, spec):
    """{port, exports: {index: export name}} from what the target's accept
    returned, checked: one export for each disk this source copies, named as
    the target names them."""
    if not isinstance(nbd, dict):
        raise ValidationError('storage: copy needs nbd, the accept phase\'s nbd result', instance=name)
    port = nbd.get('port')
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationError('nbd port must be a port number, got %r' % (port,), instance=name)
    exports = nbd.get('exports')
    wanted = copied(spec)
    if not isinstance(exports, list) or len(exports) != len(wanted):
        raise ValidationError('nbd exports must list the %d disks this guest copies' % len(wanted), instance=name)
    found = {}
    for entry in exports:
        match = EXPORT_PATTERN.fullmatch(str((entry or {}).get('name')) if isinstance(entry, dict) else '')
        index = entry.get('index') if isinstance(entry, dict) else None
        if not match or int(match.group(1)) != index or index not in wanted or index in found:
            raise ValidationError('nbd exports: %r is not an export of one of the copied disks' % (entry,),
                                  instance=name)
        found[index] = entry['name']
    return {'port': port, 'exports': found}


def mirror_arguments(index, job, node, bandwidth_mib=0):
    """blockdev-mirror's arguments for disk ``index`` to NBD client node
    ``node``: a full copy, kept once concluded (the phase dismisses it), at most
    ``bandwidth_mib`` MiB/s (0: unlimited)."""
    arguments = {'job-id': job, 'device': drive_id(index), 'target': node, 'sync': 'full',
                 'auto-dismiss': False, 'buf-size': MIRROR_BUFFER}
    if bandwidth_mib:
        arguments['speed'] = bandwidth_mib * MIB
    return arguments


class Mirrors:
    """The mirror jobs of one copy migration on the source's open session."""

    def __init__(self, qmp, name, params, run=None):
        self.qmp = qmp
        self.name = name
        self.params = params
        self.run = run
        self.jobs = {}
        self.aborted = False
        self.peer = None

    def start(self, host, nbd, tls_creds=None, tls_hostname=None):
        """An NBD client node and a full mirror job per exported disk."""
        bandwidth = self.params.get('storage_bandwidth_mib') or 0
        self.peer = (host, nbd['port'])
        for index, export_name in sorted(nbd['exports'].items()):
            node = '%s%d' % (NODE_PREFIX, index)
            job = '%s%d' % (JOB_PREFIX, index)
            options = {'driver': 'nbd', 'node-name': node, 'export': export_name,
                       'server': {'type': 'inet', 'host': host, 'port': str(nbd['port'])}}
            if tls_creds:
                options['tls-creds'] = tls_creds
                if tls_hostname:
                    options['tls-hostname'] = tls_hostname
            try:
                self.qmp.execute('blockdev-add', options)
            except MonitorError as err:
                raise MigrationError('cannot connect to the target\'s NBD export %s on %s:%d: %s'
                                     % (export_name, host, nbd['port'], err.desc or err.msg),
                                     instance=self.name, status='failed')
            self.jobs[job] = node
            try:
                self.qmp.execute('blockdev-mirror', mirror_arguments(index, job, node, bandwidth))
            except MonitorError as err:
                raise MigrationError('cannot mirror disk %d to the target: %s' % (index, err.desc or err.msg),
                                     instance=self.name, status='failed')

    def progress(self):
        """{job: query-block-jobs entry} of this migration's jobs still there."""
        return dict((job['device'], job) for job in self.qmp.execute('query-block-jobs') or []
                    if job.get('device') in self.jobs)

    def job_error(self, job):
        entry = job_info(self.qmp, job)
        if entry is None:
            return 'it is gone'
        return entry.get('error') or 'it ended (%s)' % entry.get('status')

    def wait_ready(self, deadline, stall_timeout):
        """Wait until every job mirrors in step (ready); the bytes copied. A job
        that fails, a copy without progress for stall_timeout seconds, or the
        deadline (monotonic) raise MigrationError."""
        started = time.monotonic()
        last, moved_at = -1, started
        while True:
            jobs = self.progress()
            for job in self.jobs:
                if job not in jobs:
                    raise MigrationError('copying the disks failed: mirror job %s: %s' % (job, self.job_error(job)),
                                         instance=self.name, status='failed', reason='storage')
                if jobs[job].get('io-status', 'ok') != 'ok':
                    raise MigrationError('copying the disks failed: mirror job %s: I/O status %s'
                                         % (job, jobs[job]['io-status']),
                                         instance=self.name, status='failed', reason='storage')
            done = sum(job.get('offset', 0) for job in jobs.values())
            if all(job.get('ready') for job in jobs.values()):
                return {'bytes': done, 'seconds': round(time.monotonic() - started, 3)}
            now = time.monotonic()
            if done != last:
                last, moved_at = done, now
            elif now - moved_at >= stall_timeout:
                raise MigrationError('copying the disks made no progress for %d s (%d of %d bytes copied)'
                                     % (stall_timeout, done, sum(job.get('len', 0) for job in jobs.values())),
                                     instance=self.name, status='failed', reason='stalled')
            if deadline is not None and now >= deadline:
                raise MigrationError('copying the disks was not done within the timeout (%d of %d bytes)'
                                     % (done, sum(job.get('len', 0) for job in jobs.values())),
                                     instance=self.name, status='failed', reason='timeout')
            try:
                self.qmp.wait_event(BLOCK_JOB_EVENTS, timeout=POLL_INTERVAL)
            except MonitorTimeout:
                pass

    def complete(self):
        """End every ready job cleanly (the guest is stopped: nothing new is
        written) once all it mirrored is on the target; MigrationError if one
        does not conclude without an error."""
        for job in self.jobs:
            self.qmp.execute('block-job-cancel', {'device': job})
        self._conclude(FINISH_WAIT)
        self._dismiss()

    def abort(self, wait=ABORT_WAIT):
        """Cancel this migration's jobs, and dismiss them and remove their NBD
        nodes once they ended; the jobs still ending after ``wait`` seconds."""
        self.aborted = True
        self.disconnect()
        for job in self.jobs:
            try:
                self.qmp.execute('block-job-cancel', {'device': job, 'force': True})
            except MonitorError:
                pass
        try:
            return self._conclude(wait, errors_ok=True)
        finally:
            self._dismiss()

    def disconnect(self):
        """Break this migration's NBD connections to the target (``ss -K``)
        before its jobs are cancelled. A cancelled job waits for its requests
        in flight, and while it waits QEMU's main loop holds the guest: on a
        cut link or a stopped target those requests would hang until TCP gives
        up. Broken, they fail at once and the job ends; the target's copy is
        being discarded anyway. Best effort: without ss nothing is done."""
        if self.run is None or self.peer is None or shutil.which('ss') is None:
            return
        host, port = self.peer
        self.run([shutil.which('ss'), '-K', 'dst', '[%s]' % host if ':' in host else host, 'dport', '=', str(port)])

    def _conclude(self, wait, errors_ok=False):
        """Wait until every job concluded; with ``errors_ok`` the jobs still
        running after ``wait`` seconds (else MigrationError)."""
        deadline = time.monotonic() + wait
        while True:
            states = dict((entry.get('id'), entry) for entry in self.qmp.execute('query-jobs') or []
                          if entry.get('id') in self.jobs)
            failed = [(job, entry.get('error')) for job, entry in states.items()
                      if entry.get('status') == 'concluded' and entry.get('error')]
            if failed and not errors_ok:
                raise MigrationError('mirror job %s ended with an error: %s' % failed[0],
                                     instance=self.name, status='failed', reason='storage')
            running = sorted(job for job, entry in states.items() if entry.get('status') not in ('concluded', 'null'))
            if not running:
                return []
            if time.monotonic() >= deadline:
                if errors_ok:
                    return running
                raise MigrationError('the mirror jobs did not end within %.0f s' % wait,
                                     instance=self.name, status='failed', reason='storage')
            try:
                self.qmp.wait_event(BLOCK_JOB_EVENTS, timeout=POLL_INTERVAL)
            except MonitorTimeout:
                pass

    def _dismiss(self):
        """Dismiss the concluded jobs and remove the NBD nodes no job uses any
        more (QEMU refuses the others: they are left for a later phase)."""
        for job, node in self.jobs.items():
            dismiss(self.qmp, job)
            try:
                self.qmp.execute('blockdev-del', {'node-name': node})
            except MonitorError:
                pass

    @classmethod
    def leftovers(cls, qmp, name, params):
        """Mirrors for the jobs and nodes an interrupted migrate phase left on
        this QEMU (to abort them), or None when there are none."""
        jobs = [entry['id'] for entry in qmp.execute('query-jobs') or []
                if str(entry.get('id', '')).startswith(JOB_PREFIX)]
        nodes = [entry['node-name'] for entry in qmp.execute('query-named-block-nodes') or []
                 if str(entry.get('node-name', '')).startswith(NODE_PREFIX)]
        if not jobs and not nodes:
            return None
        mirrors = cls(qmp, name, params)
        for job in jobs:
            mirrors.jobs[job] = NODE_PREFIX + job[len(JOB_PREFIX):]
        for node in nodes:
            mirrors.jobs.setdefault(JOB_PREFIX + node[len(NODE_PREFIX):], node)
        return mirrors
