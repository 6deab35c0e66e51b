# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who a guest's QEMU runs as, and the seccomp sandbox it runs in.

QEMU starts as root, opens what its command line names (/dev/kvm, disks,
taps, pidfile, sockets), installs its seccomp filter and then drops to the
``run_as`` user (``-runas``). What it opens later it opens as that user:
TLS credentials at ``object-add``, and disk images again by path when a
migration hands them over. So that user must be able to reach and open the
guest's disks read-write, and the QEMU pidfile directory is the user's, so
that a QEMU that exits cleanly can remove its pidfile.

Measured on QEMU 7.2: the filter is installed before QEMU drops privileges,
so ``elevateprivileges=deny`` (which blocks setuid) cannot be combined with
``-runas``; ``spawn=deny`` blocks the fork of ``-daemonize``, which is why QEMU
is started in the foreground and detached by the library (_launch).
"""

import os
import pwd
import stat

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError

DEFAULT_RUN_AS = 'hvops-qemu'
ROOT = 'root'
SANDBOX_ROOT = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'
SANDBOX_USER = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny'


class QemuUser:
    """A resolved run_as user: name, uid, gid and every group it is in."""

    def __init__(self, name, uid, gid, groups):
        self.name = name
        self.uid = uid
        self.gid = gid
        self.groups = frozenset(groups)

    @property
    def is_root(self):
        return self.uid == 0

    def argv(self):
        """QEMU options for this user: drop to it, and the strictest sandbox that allows."""
        if self.is_root:
            return ['-sandbox', SANDBOX_ROOT]
        return ['-runas', self.name, '-sandbox', SANDBOX_USER]

    def can_open(self, path, write):
        """Whether this user can reach path (search permission on every parent)
        and open it for reading, or reading and writing."""
        if self.is_root:
            return True
        return self.can_search(os.path.dirname(os.path.realpath(path))) and \
            self._allows(os.stat(path), 0o6 if write else 0o4)

    def can_search(self, path):
        """Whether this user has search permission on path and every directory above it."""
        if self.is_root:
            return True
        current = os.path.realpath(path)
        while True:
            if not self._allows(os.stat(current), 0o1):
                return False
            if current == os.path.dirname(current):
                return True
            current = os.path.dirname(current)

    def _allows(self, info, bits):
        if info.st_uid == self.uid:
            shift = 6
        elif info.st_gid in self.groups:
            shift = 3
        else:
            shift = 0
        return (stat.S_IMODE(info.st_mode) >> shift) & bits == bits


def resolve(run_as):
    """The QemuUser for run_as (a user name; ``root`` opts out of dropping
    privileges). A user that does not exist here is a clear error."""
    if not isinstance(run_as, str) or not run_as or not run_as.replace('-', '').replace('_', '').isalnum():
        raise ValidationError('run_as must be a user name, got %r' % (run_as,))
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ValidationError('run_as user %s does not exist on this node: the hvops.kvm.kvm_node role'
                              ' creates it (or give another user, or root to run QEMU as root)' % run_as)
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return QemuUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def lookup(run_as):
    """The QemuUser for run_as, or None when there is no such user (yet)."""
    try:
        return resolve(run_as)
    except ValidationError:
        return None


def user_of_uid(uid):
    """The name of uid, or its number as text."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
