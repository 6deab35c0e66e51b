# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception hierarchy of hvops.kvm.

Every failure the library raises is a KvmError. Modules catch KvmError and
turn it into ``fail_json(msg=str(err), **err.details)``, so a message names
what failed, on which instance, and carries QEMU's own words where it has them.
"""


class KvmError(Exception):
    """Base of all hvops.kvm errors."""

    def __init__(self, msg, instance=None, **details):
        self.msg = msg
        self.instance = instance
        self.details = details
        super().__init__(self.__str__())

    def __str__(self):
        if self.instance:
            return 'instance %s: %s' % (self.instance, self.msg)
        return self.msg


class ValidationError(KvmError):
    """The request itself is wrong; nothing was touched."""


class StateError(KvmError):
    """The instance is not in a state that allows the operation."""


class LockError(KvmError):
    """Another run holds the instance lock."""


class MissingBinaryError(KvmError):
    """A program the library needs (qemu, socat) is not installed."""


class ProcessError(KvmError):
    """Starting, identifying or signalling a QEMU process failed."""


class MonitorError(KvmError):
    """The QMP monitor failed or answered with an error.

    ``error_class`` and ``desc`` hold QEMU's error class and description when
    the failure is an error reply to a command.
    """

    def __init__(self, msg, instance=None, error_class=None, desc=None, **details):
        self.error_class = error_class
        self.desc = desc
        if error_class:
            details['qmp_error_class'] = error_class
        if desc:
            details['qmp_error'] = desc
        super().__init__(msg, instance=instance, **details)


class MonitorTimeout(MonitorError):
    """The monitor did not answer in time."""


class MigrationError(KvmError):
    """A migration phase failed."""


class ImageError(KvmError):
    """qemu-img failed, or a disk image is not what it must be.

    ``stderr`` (also in the details) holds what qemu-img said, when it ran.
    """

    def __init__(self, msg, instance=None, stderr=None, **details):
        self.stderr = stderr
        if stderr:
            details['stderr'] = stderr
        super().__init__(msg, instance=instance, **details)
