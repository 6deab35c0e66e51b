# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an instance's files live on a node.

A node keeps all hvops.kvm state under one ``run_dir``::

    run_dir/pid/NAME.pid          QEMU's pidfile (QEMU holds a lock on it while alive);
                                  pid/ belongs to the QEMU user, so that a QEMU that
                                  exits cleanly removes its pidfile itself
    run_dir/ctrl/NAME.qmp         QMP socket, used by the library
    run_dir/ctrl/NAME.monitor     human monitor socket, for operators
    run_dir/ctrl/NAME.serial      serial console socket
    run_dir/conf/NAME.json        the stored definition (what the user asked for)
    run_dir/conf/NAME.runtime     the exact argv and spec the running QEMU was started with
    run_dir/conf/NAME.vncpass     the VNC password, when one is set (mode 0600)
    run_dir/conf/NAME.log         what QEMU printed (its standard output and error)
    run_dir/lock/NAME.lock        serialises runs against the same instance

run_dir itself is mode 0711 (others may pass through, not look: the QEMU user
must reach pid/), every subdirectory 0700.

Names are validated before any path is built from them. A run_dir that
exists already is used only when it is a real directory (not a symbolic link)
owned by this user and writable by nobody else, under parents that nobody else
can rename it in; its mode is never changed.
"""

import collections
import os
import re
import stat

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._values import safe_path

DEFAULT_RUN_DIR = '/run/hvops-kvm'
RUN_DIR_MODE = 0o711
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
MAX_NAME_LENGTH = 63
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SUBDIRS = ('pid', 'ctrl', 'conf', 'lock')

InstancePaths = collections.namedtuple(
    'InstancePaths',
    ['pidfile', 'qmp', 'monitor', 'serial', 'definition', 'runtime', 'vnc_password', 'lock', 'log'])


def validate_name(name):
    """Refuse anything but a plain instance name: no paths, no dot-files."""
    if not isinstance(name, str) or not name:
        raise ValidationError('an instance name is required')
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise ValidationError(
            'invalid instance name %r: use 1 to %d letters, digits, ".", "_" or "-",'
            ' starting with a letter or digit' % (name, MAX_NAME_LENGTH))
    return name


class NodeLayout:
    """The state directory of one node (or one simulated node in tests)."""

    def __init__(self, run_dir=None):
        run_dir = run_dir or DEFAULT_RUN_DIR
        if not isinstance(run_dir, str) or not os.path.isabs(run_dir):
            raise ValidationError('run_dir must be an absolute path, got %r' % (run_dir,))
        self.run_dir = safe_path(os.path.normpath(run_dir), 'run_dir')
        if self.run_dir == '/':
            raise ValidationError('run_dir must not be /')

    def subdir(self, which):
        return os.path.join(self.run_dir, which)

    def paths(self, name):
        """All paths of one instance; the name is validated first."""
        validate_name(name)
        ctrl = self.subdir('ctrl')
        conf = self.subdir('conf')
        paths = InstancePaths(
            pidfile=os.path.join(self.subdir('pid'), name + '.pid'),
            qmp=os.path.join(ctrl, name + '.qmp'),
            monitor=os.path.join(ctrl, name + '.monitor'),
            serial=os.path.join(ctrl, name + '.serial'),
            definition=os.path.join(conf, name + '.json'),
            runtime=os.path.join(conf, name + '.runtime'),
            vnc_password=os.path.join(conf, name + '.vncpass'),
            lock=os.path.join(self.subdir('lock'), name + '.lock'),
            log=os.path.join(conf, name + '.log'),
        )
        longest = max((paths.qmp, paths.monitor, paths.serial), key=len)
        if len(longest.encode('utf-8')) > MAX_SOCKET_PATH:
            raise ValidationError(
                'socket path %s is longer than the %d bytes a unix socket allows:'
                ' use a shorter run_dir or instance name' % (longest, MAX_SOCKET_PATH), instance=name)
        return paths

    def ensure(self, qemu_user=None):
        """Create run_dir (mode 0711) and its subdirectories (0700), or check
        the ones that exist; raise StateError for one this user cannot trust.
        With a ``qemu_user`` (a _qemu_user.QemuUser) that is not root, pid/
        becomes that user's and it must be able to reach it."""
        self.verify(qemu_user)
        make_private_dir(self.run_dir, RUN_DIR_MODE)
        for sub in SUBDIRS:
            make_private_dir(self.subdir(sub), other_owner=qemu_user.uid if qemu_user and sub == 'pid' else None)
        if qemu_user is not None and not qemu_user.is_root:
            pid_dir = self.subdir('pid')
            info = os.lstat(pid_dir)
            if info.st_uid != qemu_user.uid:
                os.chown(pid_dir, qemu_user.uid, qemu_user.gid)
            if not qemu_user.can_search(self.run_dir):
                raise StateError('the QEMU user %s cannot reach %s: give run_dir and every directory above'
                                 ' it search permission for others (run_dir mode 0711, as the'
                                 ' hvops.kvm.kvm_node role makes it)' % (qemu_user.name, pid_dir))

    def verify(self, qemu_user=None):
        """Refuse a run_dir (or a parent) that another user could swap or
        fill: checked before anything in it is read and acted on. pid/ may
        belong to the QEMU user (``qemu_user``)."""
        check_parents(os.path.dirname(self.run_dir))
        if os.path.lexists(self.run_dir):
            check_own_dir(self.run_dir, 'run_dir')
            for sub in SUBDIRS:
                path = self.subdir(sub)
                if os.path.lexists(path):
                    other = qemu_user.uid if sub == 'pid' and qemu_user is not None else None
                    check_own_dir(path, 'run_dir/%s' % sub, other_owner=other)

    def exists(self):
        return os.path.isdir(self.run_dir)

    def defined_names(self):
        """Names of instances with a definition or a runtime file, sorted."""
        names = set()
        conf = self.subdir('conf')
        try:
            entries = os.listdir(conf)
        except FileNotFoundError:
            return []
        for entry in entries:
            stem, ext = os.path.splitext(entry)
            if ext in ('.json', '.runtime') and NAME_PATTERN.fullmatch(stem):
                names.add(stem)
        return sorted(names)


def check_own_dir(path, what, other_owner=None):
    """A directory of ours: a real directory (no symbolic link), owned by this
    user (or by ``other_owner``), writable by nobody else."""
    try:
        info = os.lstat(path)
    except OSError as err:
        raise StateError('cannot inspect %s %s: %s' % (what, path, err.strerror))
    if stat.S_ISLNK(info.st_mode):
        raise StateError('%s %s is a symbolic link; refusing to use it (give the real directory)'
                         % (what, path))
    if not stat.S_ISDIR(info.st_mode):
        raise StateError('%s %s exists and is not a directory' % (what, path))
    if info.st_uid not in (os.geteuid(), other_owner):
        raise StateError('%s %s is owned by uid %d, not by this user (uid %d); refusing to use a'
                         ' directory another user controls' % (what, path, info.st_uid, os.geteuid()))
    if info.st_mode & 0o022:
        raise StateError('%s %s is writable by its group or by others (mode %04o); refusing to use it:'
                         ' give a directory only its owner can write' % (what, path, info.st_mode & 0o7777))


def check_parents(path):
    """Every existing directory from / to path: owned by root or by this user,
    and writable by nobody else unless sticky (so nobody else can rename what
    lies below it)."""
    trusted = (0, os.geteuid())
    current = os.path.realpath(path)
    while True:
        if os.path.lexists(current):
            info = os.stat(current)
            loose = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
            if info.st_uid not in trusted or loose:
                raise StateError('run_dir lies under %s, which %s; another user could replace what is'
                                 ' below it' % (current, 'is owned by uid %d' % info.st_uid
                                                if info.st_uid not in trusted else
                                                'is writable by its group or by others and not sticky'))
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def make_private_dir(path, mode=0o700, other_owner=None):
    """mkdir -p with mode (0700); an existing directory is checked, never changed."""
    try:
        os.makedirs(path, 0o700)
        os.chmod(path, mode)
    except FileExistsError:
        pass
    except OSError as err:
        raise StateError('cannot create %s: %s (run as root, or give a run_dir this user may create)'
                         % (path, err.strerror))
    check_own_dir(path, 'directory', other_owner=other_owner)
