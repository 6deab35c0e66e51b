# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an instance's files live on a node.

What must outlive a reboot is under the persistent ``state_dir`` (default
/var/lib/hvops-kvm); what lives only as long as a QEMU is under ``run_dir``
(default /run/hvops-kvm, a tmpfs that a reboot empties)::

    state_dir/guests/NAME.json    the stored definition (what the user asked for)
    state_dir/guests/NAME.vncpass the VNC password, when one is set (mode 0600)
    state_dir/guests/NAME.policy  autostart and restart policy (_policy)
    state_dir/guests/NAME.last    the last state the collection gave it (_policy)
    state_dir/node/               the node's boot and shutdown reports (_node_service)

    run_dir/pid/NAME.pid          QEMU's pidfile (QEMU holds a lock on it while alive);
                                  pid/ belongs to the QEMU user, so that a QEMU that
                                  exits cleanly removes its pidfile itself
    run_dir/ctrl/NAME.qmp         QMP socket, used by the library
    run_dir/ctrl/NAME.monitor     human monitor socket, for operators
    run_dir/ctrl/NAME.serial      serial console socket
    run_dir/ctrl/NAME.qga         guest agent channel (guest_agent: true)
    run_dir/seed/NAME.iso         cloud-init seed image, made at each start (_seed);
                                  seed/ is 0711 so that the QEMU user may open
                                  the one file it is given (group-readable by it)
    run_dir/conf/NAME.runtime     the exact argv and spec the running QEMU was started with
    run_dir/conf/NAME.log         what QEMU printed (its standard output and error)
    run_dir/lock/NAME.lock        serialises runs against the same instance

run_dir itself is mode 0711 (others may pass through, not look: the QEMU user
must reach pid/ and seed/), every other subdirectory of it and state_dir with
all of its own 0700.

Collection 0.1 kept definitions and VNC passwords in run_dir/conf. They are
read from there until the first run that writes takes them over (moves them
to state_dir: ``take_over``), so check mode and facts see them unchanged.

Names are validated before any path is built from them. A run_dir that
exists already is used only when it is a real directory (not a symbolic link)
owned by this user and writable by nobody else, under parents that nobody else
can rename it in; its mode is never changed. The same holds for state_dir.
"""

import collections
import os
import re
import stat

from ansible_collections.hvops.kvm.plugins.module_utils._errors import StateError, ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._files import remove_quietly, write_atomic
from ansible_collections.hvops.kvm.plugins.module_utils._values import safe_path

DEFAULT_RUN_DIR = '/run/hvops-kvm'
DEFAULT_STATE_DIR = '/var/lib/hvops-kvm'
RUN_DIR_MODE = 0o711
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
MAX_NAME_LENGTH = 63
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SUBDIRS = ('pid', 'ctrl', 'conf', 'lock', 'seed')
# Subdirectories the QEMU user passes through (not the default 0700).
SUBDIR_MODES = {'seed': 0o711}
STATE_SUBDIRS = ('guests', 'node')
# What collection 0.1 kept in run_dir/conf and state_dir/guests now holds.
LEGACY_EXTENSIONS = ('.json', '.vncpass')

InstancePaths = collections.namedtuple(
    'InstancePaths',
    ['pidfile', 'qmp', 'monitor', 'serial', 'agent', 'seed', 'definition', 'runtime', 'vnc_password', 'lock', 'log',
     'policy', 'last', 'legacy_definition', 'legacy_vnc_password'])


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
    """The directories of one node (or one simulated node in tests)."""

    def __init__(self, run_dir=None, state_dir=None):
        self.run_dir = _directory(run_dir or DEFAULT_RUN_DIR, 'run_dir')
        self.state_dir = _directory(state_dir or DEFAULT_STATE_DIR, 'state_dir')

    def subdir(self, which):
        return os.path.join(self.run_dir, which)

    def state_subdir(self, which):
        return os.path.join(self.state_dir, which)

    def paths(self, name):
        """All paths of one instance; the name is validated first."""
        validate_name(name)
        ctrl = self.subdir('ctrl')
        conf = self.subdir('conf')
        guests = self.state_subdir('guests')
        paths = InstancePaths(
            pidfile=os.path.join(self.subdir('pid'), name + '.pid'),
            qmp=os.path.join(ctrl, name + '.qmp'),
            monitor=os.path.join(ctrl, name + '.monitor'),
            serial=os.path.join(ctrl, name + '.serial'),
            agent=os.path.join(ctrl, name + '.qga'),
            seed=os.path.join(self.subdir('seed'), name + '.iso'),
            definition=os.path.join(guests, name + '.json'),
            runtime=os.path.join(conf, name + '.runtime'),
            vnc_password=os.path.join(guests, name + '.vncpass'),
            lock=os.path.join(self.subdir('lock'), name + '.lock'),
            log=os.path.join(conf, name + '.log'),
            policy=os.path.join(guests, name + '.policy'),
            last=os.path.join(guests, name + '.last'),
            legacy_definition=os.path.join(conf, name + '.json'),
            legacy_vnc_password=os.path.join(conf, name + '.vncpass'),
        )
        longest = max((paths.qmp, paths.monitor, paths.serial, paths.agent), key=len)
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
            make_private_dir(self.subdir(sub), SUBDIR_MODES.get(sub, 0o700),
                             other_owner=qemu_user.uid if qemu_user and sub == 'pid' else None)
        make_private_dir(self.state_dir)
        for sub in STATE_SUBDIRS:
            make_private_dir(self.state_subdir(sub))
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
        """Refuse a run_dir or state_dir (or a parent) that another user could
        swap or fill: checked before anything in it is read and acted on.
        run_dir/pid may belong to the QEMU user (``qemu_user``)."""
        qemu_uid = qemu_user.uid if qemu_user is not None else None
        for top, what, subdirs in ((self.run_dir, 'run_dir', SUBDIRS), (self.state_dir, 'state_dir', STATE_SUBDIRS)):
            check_parents(os.path.dirname(top), what)
            if not os.path.lexists(top):
                continue
            check_own_dir(top, what)
            for sub in subdirs:
                path = os.path.join(top, sub)
                if os.path.lexists(path):
                    other = qemu_uid if (what, sub) == ('run_dir', 'pid') else None
                    check_own_dir(path, '%s/%s' % (what, sub), other_owner=other)

    def exists(self):
        return os.path.isdir(self.run_dir)

    def defined_names(self):
        """Names of instances with a definition (here or, from collection 0.1,
        in run_dir/conf) or a runtime file, sorted."""
        names = set()
        for directory, extensions in ((self.state_subdir('guests'), ('.json',)),
                                      (self.subdir('conf'), ('.json', '.runtime'))):
            names.update(_stems(directory, extensions))
        return sorted(names)

    def legacy_names(self):
        """Instances whose definition or VNC password collection 0.1 left in run_dir/conf."""
        return sorted(_stems(self.subdir('conf'), LEGACY_EXTENSIONS))

    def take_over(self):
        """Move what collection 0.1 kept in run_dir/conf (definitions, VNC
        passwords) to state_dir/guests; return the names moved. A file that
        state_dir has already is newer: the old one is only removed. Call
        after ``ensure``."""
        moved = []
        for name in self.legacy_names():
            paths = self.paths(name)
            for old, new in ((paths.legacy_definition, paths.definition),
                             (paths.legacy_vnc_password, paths.vnc_password)):
                if not os.path.lexists(old):
                    continue
                if not os.path.lexists(new):
                    info = os.lstat(old)
                    if not stat.S_ISREG(info.st_mode):
                        raise StateError('%s is not a regular file; refusing to take it over' % old,
                                         instance=name)
                    with open(old, 'rb') as handle:
                        write_atomic(new, handle.read(), mode=0o600)
                remove_quietly(old)
            moved.append(name)
        return moved


def _directory(path, what):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValidationError('%s must be an absolute path, got %r' % (what, path))
    path = safe_path(os.path.normpath(path), what)
    if path == '/':
        raise ValidationError('%s must not be /' % what)
    return path


def _stems(directory, extensions):
    """Instance names of the files in directory with one of extensions."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return set()
    names = set()
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if ext in extensions and NAME_PATTERN.fullmatch(stem):
            names.add(stem)
    return names


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


def check_parents(path, what='run_dir'):
    """Every existing directory from / to path: owned by root or by this user,
    and writable by nobody else unless sticky (so nobody else can rename what
    lies below it); ``what`` names the directory below them in the message."""
    trusted = (0, os.geteuid())
    current = os.path.realpath(path)
    while True:
        if os.path.lexists(current):
            info = os.stat(current)
            loose = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
            if info.st_uid not in trusted or loose:
                raise StateError('%s lies under %s, which %s; another user could replace what is'
                                 ' below it' % (what, current, 'is owned by uid %d' % info.st_uid
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
