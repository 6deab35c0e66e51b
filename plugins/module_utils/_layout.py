# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an instance's files live on a host.

A host keeps all hvops.kvm state under one ``run_dir`` (mode 0700)::

    run_dir/pid/NAME.pid          QEMU's pidfile (QEMU holds a lock on it while alive)
    run_dir/ctrl/NAME.qmp         QMP socket, used by the library
    run_dir/ctrl/NAME.monitor     human monitor socket, for operators
    run_dir/ctrl/NAME.serial      serial console socket
    run_dir/conf/NAME.json        the stored definition (what the user asked for)
    run_dir/conf/NAME.runtime     the exact argv and spec the running QEMU was started with
    run_dir/conf/NAME.vncpass     the VNC password, when one is set (mode 0600)
    run_dir/lock/NAME.lock        serialises runs against the same instance
    run_dir/ifup/NAME-N.ifup      if-up script of bridged NIC N

Names are validated before any path is built from them.
"""

import collections
import hashlib
import os
import re

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError

DEFAULT_RUN_DIR = '/run/hvops-kvm'
# Where if-up scripts go when run_dir sits on a noexec mount (as /run often does).
EXEC_FALLBACK_DIR = '/var/lib/hvops-kvm/ifup'
NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
MAX_NAME_LENGTH = 63
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
SUBDIRS = ('pid', 'ctrl', 'conf', 'lock', 'ifup')

InstancePaths = collections.namedtuple(
    'InstancePaths',
    ['pidfile', 'qmp', 'monitor', 'serial', 'definition', 'runtime', 'vnc_password', 'lock'])


def validate_name(name):
    """Refuse anything but a plain instance name: no paths, no dot-files."""
    if not isinstance(name, str) or not name:
        raise ValidationError('an instance name is required')
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise ValidationError(
            'invalid instance name %r: use 1 to %d letters, digits, ".", "_" or "-",'
            ' starting with a letter or digit' % (name, MAX_NAME_LENGTH))
    return name


class HostLayout:
    """The state directory of one host (or one simulated host in tests)."""

    def __init__(self, run_dir=None):
        run_dir = run_dir or DEFAULT_RUN_DIR
        if not os.path.isabs(run_dir):
            raise ValidationError('run_dir must be an absolute path, got %r' % run_dir)
        if ',' in run_dir:
            raise ValidationError('run_dir must not contain a comma (QEMU option syntax), got %r' % run_dir)
        self.run_dir = os.path.normpath(run_dir)

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
        )
        longest = max((paths.qmp, paths.monitor, paths.serial), key=len)
        if len(longest.encode('utf-8')) > MAX_SOCKET_PATH:
            raise ValidationError(
                'socket path %s is longer than the %d bytes a unix socket allows:'
                ' use a shorter run_dir or instance name' % (longest, MAX_SOCKET_PATH), instance=name)
        return paths

    def ensure(self):
        """Create run_dir and its subdirectories, mode 0700 (safe on a fresh tmpfs)."""
        for path in (self.run_dir,) + tuple(self.subdir(s) for s in SUBDIRS):
            make_private_dir(path)

    def exists(self):
        return os.path.isdir(self.run_dir)

    def ifup_dir(self):
        """A directory QEMU can execute if-up scripts from."""
        own = self.subdir('ifup')
        probe = own if os.path.isdir(own) else self.run_dir
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.statvfs(probe).f_flag & os.ST_NOEXEC:
            return own
        digest = hashlib.sha1(self.run_dir.encode('utf-8')).hexdigest()[:12]
        return os.path.join(EXEC_FALLBACK_DIR, digest)

    def ifup_script(self, name, index):
        validate_name(name)
        return os.path.join(self.ifup_dir(), '%s-%d.ifup' % (name, index))

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
            if ext in ('.json', '.runtime') and NAME_PATTERN.match(stem):
                names.add(stem)
        return sorted(names)


def make_private_dir(path):
    """mkdir -p with mode 0700, tightening the mode of an existing directory."""
    try:
        os.makedirs(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise ValidationError('%s exists and is not a directory' % path)
    if os.stat(path).st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
