# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk images as the kvm_disk module sees them: one image at a path, made,
grown, converted, reported or removed.

``DiskTask.plan`` looks and decides, touching nothing; ``apply`` takes the
instance lock of every instance that uses the image, makes the plan again
under them and carries it out. Check mode runs only ``plan``, so its
prediction is the real run's decision.

What is refused, before anything is touched: relative paths, ``..``, NUL and
control characters; a path that is a symbolic link, a directory or anything
but a regular file; an image inside the node's run_dir or state_dir; a
format, backing file or cluster size that differs from the existing image's
(nothing is ever reformatted or rebased); shrinking unless ``shrink``, and
always on a running guest; resizing an image that is the backing file of an
instance's disk; removing an image an instance uses; a qemu-img write on an
image a running guest holds (a running guest's image grows through its own
QMP ``block_resize``).
"""

import contextlib
import grp
import os
import pwd
import re
import stat
import tempfile

from ansible_collections.hvops.kvm.plugins.module_utils import _qemu_user
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ImageError, StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._files import remove_quietly
from ansible_collections.hvops.kvm.plugins.module_utils._image_use import image_users
from ansible_collections.hvops.kvm.plugins.module_utils._instance import Instance
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout, check_parents
from ansible_collections.hvops.kvm.plugins.module_utils._locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._locking import instance_lock
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_img import find_qemu_img, image_info, run_qemu_img
from ansible_collections.hvops.kvm.plugins.module_utils._qmp import DEFAULT_TIMEOUT as DEFAULT_MONITOR_TIMEOUT
from ansible_collections.hvops.kvm.plugins.module_utils._values import seconds, size_bytes

STATES = ('present', 'absent', 'info')
# kvm_disk's states; 'info' is kvm_disk_info's (only looks).
MODULE_STATES = ('present', 'absent')
FORMATS = ('raw', 'qcow2')
# What ``source`` may be read as (qemu-img reads them all; made images are FORMATS).
SOURCE_FORMATS = ('raw', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'vpc', 'qed')
PREALLOCATION = {'raw': ('off', 'falloc', 'full'), 'qcow2': ('off', 'metadata', 'falloc', 'full')}
PREALLOCATION_MODES = ('off', 'metadata', 'falloc', 'full')
DEFAULT_FORMAT = 'raw'
DEFAULT_MODE = 0o600
# qemu-img rounds every size up to whole 512-byte sectors (raw images too).
SECTOR = 512
MIN_CLUSTER = 512
MAX_CLUSTER = 2 << 20
QCOW2_DEFAULT_CLUSTER = 65536
CONTROL_CHARACTERS = re.compile(r'[\x00-\x1f\x7f]')
MODE_TEXT = re.compile(r'[0-7]{3,4}')
# What a lock conflict looks like in qemu-img's words.
LOCK_WORDS = ('lock', 'Is another process using the image')


def image_path(value, what):
    """An absolute, normalised path without "..", NUL or control characters."""
    if not isinstance(value, str) or not value:
        raise ValidationError('%s must be an absolute path, got %r' % (what, value))
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError('%s must not hold NUL, newlines or other control characters, got %r' % (what, value))
    if not value.startswith('/'):
        raise ValidationError('%s must be an absolute path, got %r (a relative one would depend on the'
                              ' directory the module runs in)' % (what, value))
    if '..' in value.split('/'):
        raise ValidationError('%s must not contain "..", got %r: give the path itself' % (what, value))
    path = os.path.normpath(value)
    if path.startswith('//'):
        path = '/' + path.lstrip('/')
    if path == '/':
        raise ValidationError('%s must name a file, got %r' % (what, value))
    return path


def file_mode(value):
    """A file mode from an octal text ("0600", "640") or its number; None
    stays None. Special bits and writing by others are refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError('mode must be an octal text such as "0600", got %r' % (value,))
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and MODE_TEXT.fullmatch(value.strip()):
        mode = int(value.strip(), 8)
    else:
        raise ValidationError('mode must be an octal text such as "0600" or "0660", got %r' % (value,))
    if not 0 <= mode <= 0o777:
        raise ValidationError('mode %r has bits beyond 0777 (setuid, setgid, sticky): refused for a disk'
                              ' image' % (value,))
    if mode & 0o002:
        raise ValidationError('mode %04o lets every user of the node write the disk image; refused' % mode)
    return mode


def checked_request(params):
    """The task's parameters checked and normalised (pure): a dict."""
    state = params.get('state') or 'present'
    if state not in STATES:
        raise ValidationError('state must be one of %s, got %r' % (', '.join(STATES), state))
    request = {'state': state, 'path': image_path(params.get('path'), 'path')}
    if state != 'present':
        return request
    fmt = params.get('format')
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError('format must be one of %s, got %r' % (', '.join(FORMATS), fmt))
    size = params.get('size')
    if size is not None:
        size = size_bytes(size, 'size')
        if size % SECTOR:
            raise ValidationError('size %r is not a whole number of 512-byte sectors (qemu-img would round'
                                  ' it up to %d)' % (params.get('size'), (size // SECTOR + 1) * SECTOR))
        if size == 0:
            raise ValidationError('size must be more than 0 bytes')
    backing = params.get('backing_file')
    backing_format = params.get('backing_format')
    if backing is not None:
        backing = image_path(backing, 'backing_file')
        if backing == request['path']:
            raise ValidationError('backing_file must not be the image itself')
        if backing_format not in FORMATS:
            raise ValidationError('backing_file needs backing_format (one of %s), got %r'
                                  % (', '.join(FORMATS), backing_format))
        if fmt == 'raw':
            raise ValidationError('a raw image cannot have a backing file: use format qcow2 with backing_file')
    elif backing_format is not None:
        raise ValidationError('backing_format is only meaningful with backing_file')
    source = params.get('source')
    source_format = params.get('source_format')
    if source is not None:
        source = image_path(source, 'source')
        if source == request['path']:
            raise ValidationError('source must be another image than path')
        if backing is not None:
            raise ValidationError('source and backing_file exclude each other: a converted image stands alone')
        if source_format is not None and source_format not in SOURCE_FORMATS:
            raise ValidationError('source_format must be one of %s, got %r'
                                  % (', '.join(SOURCE_FORMATS), source_format))
    elif source_format is not None:
        raise ValidationError('source_format is only meaningful with source')
    preallocation = params.get('preallocation')
    if preallocation is not None and preallocation not in PREALLOCATION_MODES:
        raise ValidationError('preallocation must be one of %s, got %r'
                              % (', '.join(PREALLOCATION_MODES), preallocation))
    if preallocation is not None and fmt is not None and preallocation not in PREALLOCATION[fmt]:
        raise ValidationError('preallocation %s does not apply to %s images (it takes %s)'
                              % (preallocation, fmt, ', '.join(PREALLOCATION[fmt])))
    cluster = params.get('cluster_size')
    if cluster is not None:
        cluster = size_bytes(cluster, 'cluster_size')
        if cluster < MIN_CLUSTER or cluster > MAX_CLUSTER or cluster & (cluster - 1):
            raise ValidationError('cluster_size must be a power of two from 512 to 2M, got %r'
                                  % params.get('cluster_size'))
        if fmt == 'raw':
            raise ValidationError('cluster_size applies to qcow2 images only')
    shrink = params.get('shrink') or False
    if not isinstance(shrink, bool):
        raise ValidationError('shrink must be true or false')
    request.update(format=fmt, size=size, backing_file=backing, backing_format=backing_format, source=source,
                   source_format=source_format, preallocation=preallocation, cluster_size=cluster,
                   shrink=shrink, owner=_owner(params.get('owner')), group=_group(params.get('group')),
                   mode=file_mode(params.get('mode')))
    return request


def _owner(value):
    if value is None:
        return None
    try:
        return pwd.getpwuid(int(value)).pw_uid if str(value).isdigit() else pwd.getpwnam(value).pw_uid
    except (KeyError, TypeError):
        raise ValidationError('owner %r is not a user of this node' % (value,))


def _group(value):
    if value is None:
        return None
    try:
        return grp.getgrgid(int(value)).gr_gid if str(value).isdigit() else grp.getgrnam(value).gr_gid
    except (KeyError, TypeError):
        raise ValidationError('group %r is not a group of this node' % (value,))


def _name_of_user(uid):
    return _qemu_user.user_of_uid(uid)


def _name_of_group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class DiskTask:
    """One kvm_disk task; ``run(argv) -> (rc, stdout, stderr)``."""

    def __init__(self, params, run):
        self.params = params
        self.request = checked_request(params)
        self.path = self.request['path']
        self.layout = NodeLayout(params.get('run_dir'), params.get('state_dir'))
        self.run = run
        self.binary = find_qemu_img(params.get('qemu_img'))
        self.lock_timeout = seconds(params.get('lock_timeout') or DEFAULT_LOCK_TIMEOUT, 'lock_timeout')
        self.monitor_timeout = seconds(params.get('monitor_timeout') or DEFAULT_MONITOR_TIMEOUT,
                                       'monitor_timeout', low=0.1, high=3600)
        self.run_as = params.get('run_as') or _qemu_user.DEFAULT_RUN_AS
        self.warnings = []

    # -- looking ---------------------------------------------------------
    def _outside_node_dirs(self, path, what):
        real = os.path.realpath(path)
        for top, name in ((self.layout.run_dir, 'run_dir'), (self.layout.state_dir, 'state_dir')):
            top_real = os.path.realpath(top)
            if real == top_real or real.startswith(top_real.rstrip('/') + '/'):
                raise ValidationError('%s %s lies inside the node\'s %s (%s), which holds the collection\'s own'
                                      ' state: refused' % (what, path, name, top))

    def _regular(self, path, what, must_exist=False, follow=False):
        """lstat of path when it is a regular file, None when it does not exist."""
        try:
            info = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            if must_exist:
                raise ValidationError('%s %s does not exist' % (what, path))
            return None
        except OSError as err:
            raise StateError('cannot inspect %s %s: %s' % (what, path, err.strerror))
        if stat.S_ISLNK(info.st_mode):
            raise ValidationError('%s %s is a symbolic link; refusing it (give the path of the image itself)'
                                  % (what, path))
        if stat.S_ISDIR(info.st_mode):
            raise ValidationError('%s %s is a directory, not a disk image' % (what, path))
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError('%s %s is not a regular file (a device, fifo or socket): this module manages'
                                  ' image files only' % (what, path))
        return info

    def _info(self, path, users, locked_ok=True):
        """image_info of path, probing its format; -U when a running guest holds it."""
        running = any(use['running'] for use in users)
        try:
            return image_info(self.run, path, force_share=running, binary=self.binary)
        except ImageError as err:
            held = any(word in (err.stderr or '') for word in LOCK_WORDS)
            if held and locked_ok:
                info = image_info(self.run, path, force_share=True, binary=self.binary)
                info['held'] = True
                return info
            raise

    def users(self, path):
        return image_users(self.layout, path, self.run, binary=self.binary)

    def plan(self):
        """Look and decide: a dict with the image before, after (predicted)
        and the actions, in order."""
        request = self.request
        state = request['state']
        self._outside_node_dirs(self.path, 'path')
        self.layout.verify(_qemu_user.lookup(self.run_as))
        current = self._regular(self.path, 'path')
        users = self.users(self.path) if current is not None else []
        before = self._info(self.path, users) if current is not None else None
        plan = {'state': state, 'users': users, 'before': before, 'stat': current, 'actions': [],
                'after': before, 'size': None, 'drive': None, 'owner': None, 'group': None, 'mode': None}
        if state == 'info':
            if before is not None and before.get('held'):
                self.warnings.append('%s is held by a process this collection does not know (qemu-img could'
                                     ' not take its lock); read without the lock' % self.path)
            return plan
        if state == 'absent':
            if current is not None:
                self._check_removable(users, before)
                check_parents(os.path.dirname(self.path), 'disk image %s' % self.path)
                plan['actions'] = ['remove']
                plan['after'] = None
            return plan
        if current is None:
            self._plan_create(plan)
        else:
            self._plan_existing(plan)
        self._plan_ownership(plan)
        if plan['actions']:
            check_parents(os.path.dirname(self.path), 'disk image %s' % self.path)
        return plan

    def _check_removable(self, users, before):
        if users:
            first = users[0]
            how = 'as the backing file of its disk %s' % first['backing_of'] if first['backing_of'] else \
                'as its disk %d' % first['disk']
            raise StateError('%s is used by instance %s (%s%s); refusing to remove it: remove it from the'
                             ' instance (or the instance) first' % (
                                 self.path, first['instance'], how,
                                 ', running' if first['running'] else ', defined'), used_by=_used_by(users))
        if before.get('held'):
            raise StateError('%s is held by a process this collection does not know (qemu-img could not take'
                             ' its lock); refusing to remove it' % self.path)

    def _plan_create(self, plan):
        request = self.request
        self._outside_node_dirs(self.path, 'path')
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise ValidationError('the directory %s of path does not exist; it is not created by this module'
                                  % parent)
        fmt = request['format'] or DEFAULT_FORMAT
        if request['backing_file'] and fmt != 'qcow2':
            raise ValidationError('a backing file needs format qcow2 (format defaults to raw): give format qcow2')
        self._check_format_options(fmt)
        chain = []
        if request['source']:
            size = self._plan_source(fmt)
            plan['actions'].append('convert')
            if request['size'] is not None and request['size'] > size:
                plan['actions'].append('resize')
                size = request['size']
        else:
            base_size = None
            if request['backing_file']:
                base_size, chain = self._plan_backing()
            size = request['size'] if request['size'] is not None else base_size
            if size is None:
                raise ValidationError('size is required to create %s (or give source, or a backing_file whose'
                                      ' size it takes)' % self.path)
            plan['actions'].append('create')
        plan['size'] = size
        plan['after'] = {
            'path': self.path, 'format': fmt, 'virtual_size': size, 'actual_size': None,
            'cluster_size': (request['cluster_size'] or QCOW2_DEFAULT_CLUSTER) if fmt == 'qcow2' else None,
            'backing_chain': chain, 'snapshots': [], 'dirty': False,
        }

    def _check_format_options(self, fmt):
        request = self.request
        if request['preallocation'] and request['preallocation'] not in PREALLOCATION[fmt]:
            raise ValidationError('preallocation %s does not apply to %s images (it takes %s)'
                                  % (request['preallocation'], fmt, ', '.join(PREALLOCATION[fmt])))
        if request['cluster_size'] and fmt != 'qcow2':
            raise ValidationError('cluster_size applies to qcow2 images only')

    def _plan_backing(self):
        request = self.request
        backing = request['backing_file']
        self._outside_node_dirs(backing, 'backing_file')
        self._regular(backing, 'backing_file', must_exist=True, follow=True)
        users = self.users(backing)
        writers = [use for use in users if not use['readonly']]
        if writers:
            raise StateError('backing_file %s is used read-write by instance %s: an image over a backing file'
                             ' that changes is corrupt from the next write; give it read-only (readonly: true)'
                             ' or use a copy' % (backing, writers[0]['instance']))
        info = self._info(backing, users)
        if info['format'] != request['backing_format']:
            raise ValidationError('backing_file %s is a %s image, not %s (backing_format)'
                                  % (backing, info['format'], request['backing_format']))
        chain = [{'path': backing, 'format': info['format']}] + info['backing_chain']
        user = _qemu_user.lookup(self.run_as)
        unreadable = [link['path'] for link in chain if user is not None and os.path.exists(link['path'])
                      and not user.can_open(link['path'], write=False)]
        if unreadable:
            self.warnings.append('the QEMU user %s cannot read the backing file %s: a guest using %s will not'
                                 ' start until it can' % (user.name, unreadable[0], self.path))
        return info['virtual_size'], chain

    def _plan_source(self, fmt):
        request = self.request
        source = request['source']
        self._outside_node_dirs(source, 'source')
        self._regular(source, 'source', must_exist=True, follow=True)
        users = self.users(source)
        writers = [use for use in users if use['running'] and not use['readonly'] and not use['backing_of']]
        if writers:
            raise StateError('source %s is written by the running instance %s: a copy of it would be torn;'
                             ' stop the instance first' % (source, writers[0]['instance']))
        info = self._info(source, users, locked_ok=False)
        if request['source_format'] and info['format'] != request['source_format']:
            raise ValidationError('source %s is a %s image, not %s (source_format)'
                                  % (source, info['format'], request['source_format']))
        if request['size'] is not None and request['size'] < info['virtual_size']:
            raise ValidationError('size %d is smaller than the source image (%d bytes); a converted image is'
                                  ' never shrunk' % (request['size'], info['virtual_size']))
        self.source_format = info['format']
        return info['virtual_size']

    def _plan_existing(self, plan):
        request = self.request
        before = plan['before']
        users = plan['users']
        if before.get('held'):
            raise StateError('%s is held by a process this collection does not know (qemu-img could not take'
                             ' its lock); refusing to change it' % self.path)
        if request['format'] and before['format'] != request['format']:
            raise ValidationError('%s is a %s image, not %s: an existing image is never reformatted (convert'
                                  ' it into another path with source)'
                                  % (self.path, before['format'], request['format']))
        self._check_format_options(before['format'])
        backing = before['backing_chain'][0] if before['backing_chain'] else None
        if request['backing_file']:
            if backing is None or os.path.realpath(backing['path']) != os.path.realpath(request['backing_file']):
                raise ValidationError('%s has %s, not backing_file %s: an existing image is never rebased'
                                      % (self.path, 'backing file %s' % backing['path'] if backing
                                         else 'no backing file', request['backing_file']))
            if backing['format'] != request['backing_format']:
                raise ValidationError('the backing file of %s is a %s image, not %s (backing_format)'
                                      % (self.path, backing['format'], request['backing_format']))
        if request['cluster_size'] and before['cluster_size'] != request['cluster_size']:
            raise ValidationError('%s has a cluster size of %s bytes, not %d: an existing image keeps its'
                                  ' cluster size' % (self.path, before['cluster_size'], request['cluster_size']))
        size = request['size']
        if size is None or size == before['virtual_size']:
            return
        shrinking = size < before['virtual_size']
        if shrinking and not request['shrink']:
            raise ValidationError('%s is %d bytes and size asks for %d: shrinking destroys whatever lies past the'
                                  ' new end and is done only with shrink: true'
                                  % (self.path, before['virtual_size'], size))
        bases = [use for use in users if use['backing_of']]
        if bases:
            raise StateError('%s is the backing file of disk %s of instance %s; refusing to resize a backing'
                             ' file' % (self.path, bases[0]['backing_of'], bases[0]['instance']))
        running = [use for use in users if use['running']]
        if running and shrinking:
            raise StateError('%s is used by the running instance %s; refusing to shrink it (a guest never'
                             ' expects its disk to lose blocks): stop it first' % (self.path, running[0]['instance']))
        if running:
            use = running[0]
            if len(running) > 1 or use['readonly']:
                raise StateError('%s is used read-only by the running instance %s; it can only be grown through'
                                 ' a guest that writes it, or offline' % (self.path, use['instance']))
            plan['actions'].append('block_resize')
            plan['drive'] = use
        else:
            plan['actions'].append('resize')
        plan['size'] = size
        plan['after'] = dict(before, virtual_size=size)

    def _plan_ownership(self, plan):
        """Owner, group and mode: as given, or for a new image the QEMU user's with 0600."""
        request = self.request
        current = plan['stat']
        owner, group, mode = request['owner'], request['group'], request['mode']
        if current is None:
            if owner is None or group is None:
                user = _qemu_user.resolve(self.run_as)
                if owner is None:
                    owner = user.uid
                if group is None:
                    group = user.gid if request['owner'] is None else pwd.getpwuid(owner).pw_gid
            mode = DEFAULT_MODE if mode is None else mode
            plan.update(owner=owner, group=group, mode=mode)
            return
        if owner is not None and owner != current.st_uid or group is not None and group != current.st_gid:
            plan['actions'].append('set_owner')
        if mode is not None and mode != stat.S_IMODE(current.st_mode):
            plan['actions'].append('set_mode')
        plan.update(owner=current.st_uid if owner is None else owner,
                    group=current.st_gid if group is None else group,
                    mode=stat.S_IMODE(current.st_mode) if mode is None else mode)

    # -- doing -----------------------------------------------------------
    def apply(self, plan):
        """Carry out the plan under the lock of every instance using the
        image (made again under them); returns the plan carried out."""
        if not plan['actions']:
            return plan
        with self._locks(plan['users']):
            users = plan['users']
            plan = self.plan()
            if _names(plan['users']) - _names(users):
                raise StateError('%s came into use by instance %s while this task looked at it; run the task'
                                 ' again' % (self.path, ', '.join(sorted(_names(plan['users']) - _names(users)))))
            for action in plan['actions']:
                getattr(self, '_do_' + action)(plan)
        return plan

    @contextlib.contextmanager
    def _locks(self, users):
        with contextlib.ExitStack() as stack:
            for name in sorted(_names(users)):
                stack.enter_context(instance_lock(self.layout.paths(name), name, timeout=self.lock_timeout))
            yield

    def _options(self, fmt):
        request = self.request
        options = []
        if request['preallocation']:
            options.append('preallocation=%s' % request['preallocation'])
        if request['cluster_size']:
            options.append('cluster_size=%d' % request['cluster_size'])
        return ['-o', ','.join(options)] if options else []

    def _new_file(self, plan, make):
        """Make the image under a temporary name beside path (make(tmp)), give
        it its owner and mode, then link it into place: path never holds a
        half-made image, and one that appeared meanwhile is never overwritten."""
        directory, base = os.path.split(self.path)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % base, suffix='.tmp', dir=directory)
        try:
            os.close(fd)
            make(tmp)
            self._set_attributes(tmp, plan['owner'], plan['group'], plan['mode'])
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise StateError('%s appeared while it was being made; left as it is' % self.path)
        finally:
            remove_quietly(tmp)

    def _do_create(self, plan):
        request = self.request
        fmt = plan['after']['format']
        argv = ['create', '-q', '-f', fmt] + self._options(fmt)
        if request['backing_file']:
            argv += ['-b', request['backing_file'], '-F', request['backing_format']]

        def make(tmp):
            run_qemu_img(self.run, argv + [tmp, str(plan['size'])], what='creating %s' % self.path,
                         binary=self.binary)
        self._new_file(plan, make)

    def _do_convert(self, plan):
        request = self.request
        fmt = plan['after']['format']

        def make(tmp):
            run_qemu_img(self.run, ['convert', '-q', '-f', self.source_format, '-O', fmt] + self._options(fmt)
                         + [request['source'], tmp], what='converting %s into %s' % (request['source'], self.path),
                         binary=self.binary)
            if 'resize' in plan['actions']:
                self._resize(tmp, fmt, plan['size'])
        self._new_file(plan, make)

    def _resize(self, path, fmt, size, shrink=False):
        argv = ['resize', '-q', '-f', fmt]
        if shrink:
            argv.append('--shrink')
        if self.request['preallocation'] and self.request['preallocation'] != 'off' and not shrink:
            argv.append('--preallocation=%s' % self.request['preallocation'])
        run_qemu_img(self.run, argv + [path, str(size)], what='resizing %s' % self.path, binary=self.binary)

    def _do_resize(self, plan):
        if 'convert' in plan['actions']:
            return
        before = plan['before']
        self._resize(self.path, before['format'], plan['size'], shrink=plan['size'] < before['virtual_size'])

    def _do_block_resize(self, plan):
        use = plan['drive']
        instance = Instance(self.layout, use['instance'], self.run, monitor_timeout=self.monitor_timeout)
        if instance.pid() is None:
            raise StateError('stopped while the resize was being prepared; run the task again',
                             instance=use['instance'])
        with instance.monitor() as qmp:
            qmp.execute('block_resize', {'device': use['drive'], 'size': plan['size']})

    def _do_set_owner(self, plan):
        self._set_attributes(self.path, plan['owner'], plan['group'], None)

    def _do_set_mode(self, plan):
        self._set_attributes(self.path, None, None, plan['mode'])

    def _do_remove(self, plan):
        os.unlink(self.path)

    @staticmethod
    def _set_attributes(path, owner, group, mode):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if owner is not None or group is not None:
                os.fchown(fd, -1 if owner is None else owner, -1 if group is None else group)
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)

    # -- reporting -------------------------------------------------------
    def report(self, image, users, info, predicted=None):
        """The ``disk`` a task returns: ``image`` (an image_info, None when
        there is none), its ``users``, its owner, group and mode from ``info``
        (an lstat) or, for a predicted image, from the plan ``predicted``."""
        disk = {'path': self.path, 'exists': image is not None, 'format': None, 'virtual_size': None,
                'actual_size': None, 'cluster_size': None, 'backing_chain': [], 'snapshots': 0, 'dirty': False,
                'owner': None, 'group': None, 'mode': None, 'qemu_user_can_open': None,
                'in_use': bool(users), 'used_by': _used_by(users)}
        if image is None:
            return disk
        disk.update((key, image[key]) for key in ('format', 'virtual_size', 'actual_size', 'cluster_size',
                                                  'backing_chain', 'dirty'))
        disk['snapshots'] = len(image['snapshots'])
        if predicted is not None:
            owner, group, mode = predicted['owner'], predicted['group'], predicted['mode']
        else:
            owner, group, mode = info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)
            user = _qemu_user.lookup(self.run_as)
            disk['qemu_user_can_open'] = user.can_open(self.path, write=True) if user else None
        disk.update(owner=_name_of_user(owner), group=_name_of_group(group), mode='%04o' % mode)
        return disk

    def final(self):
        """The ``disk`` after the run, looked at again."""
        info = self._regular(self.path, 'path')
        if info is None:
            return self.report(None, [], None)
        users = self.users(self.path)
        return self.report(self._info(self.path, users), users, os.lstat(self.path))


def _names(users):
    return set(use['instance'] for use in users)


def _used_by(users):
    """[{instance, running, disk, drive, readonly, backing_of}] as a task returns them."""
    return [dict(use) for use in users]


def diff_view(disk):
    if not disk['exists']:
        return {'state': 'absent'}
    backing = disk['backing_chain'][0] if disk['backing_chain'] else None
    return {'state': 'present', 'format': disk['format'], 'virtual_size': disk['virtual_size'],
            'backing_file': backing['path'] if backing else None,
            'backing_format': backing['format'] if backing else None,
            'owner': disk['owner'], 'group': disk['group'], 'mode': disk['mode']}


def run_task(params, run, check_mode=False):
    """The whole kvm_disk task: (result, diff)."""
    task = DiskTask(params, run)
    plan = task.plan()
    before = task.report(plan['before'], plan['users'], plan['stat'])
    if check_mode and plan['actions']:
        disk = task.report(plan['after'], plan['users'] if plan['after'] else [], plan['stat'], predicted=plan)
    elif not plan['actions']:
        disk = before
    else:
        plan = task.apply(plan)
        disk = task.final()
        user = _qemu_user.lookup(task.run_as)
        if disk['exists'] and user is not None and not disk['qemu_user_can_open']:
            task.warnings.append('the QEMU user %s cannot open %s read-write: kvm_instance refuses it as a'
                                 ' read-write disk (give it owner %s, or its group with mode 0660)'
                                 % (user.name, task.path, user.name))
    result = {'changed': bool(plan['actions']), 'actions': plan['actions'], 'disk': disk,
              'warnings': task.warnings}
    return result, {'before': diff_view(before), 'after': diff_view(disk)}
