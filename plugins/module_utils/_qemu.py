# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The QEMU binary of a node: where it is, its version, its machine types,
and which accelerator it can use."""

import fcntl
import os
import re
import shutil

from ansible_collections.hvops.kvm.plugins.module_utils._errors import (
    MissingBinaryError, ProcessError, ValidationError)

QEMU_CANDIDATES = ('qemu-system-x86_64', 'kvm')
KVM_DEVICE = '/dev/kvm'
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
VERSION_PATTERN = re.compile(r'version (\d+)\.(\d+)(?:\.(\d+))?')


def find_qemu(binary=None):
    """Absolute path of the QEMU binary to use."""
    if binary:
        path = binary if os.path.isabs(binary) else shutil.which(binary)
        if not path or not os.access(path, os.X_OK):
            raise MissingBinaryError('QEMU binary %s not found or not executable' % binary)
        return path
    for candidate in QEMU_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    raise MissingBinaryError('no QEMU binary found (%s): install the qemu-system-x86 package'
                             % ', '.join(QEMU_CANDIDATES))


def parse_version(text):
    """(major, minor, micro) from ``qemu -version`` output, or None."""
    match = VERSION_PATTERN.search(text or '')
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def parse_machine_types(text):
    """{name: alias-target-or-None} and the default machine from ``-machine help``."""
    machines = {}
    default = None
    for line in (text or '').splitlines():
        parts = line.split(None, 1)
        if not parts or parts[0] == 'Supported':
            continue
        name = parts[0]
        rest = parts[1] if len(parts) > 1 else ''
        alias = re.search(r'\(alias of ([^)]+)\)', rest)
        machines[name] = alias.group(1) if alias else None
        if '(default)' in rest:
            default = name
    return machines, default


def query_binary(run, binary):
    """Version and machine types of a QEMU binary, by running it."""
    rc, out, err = run([binary, '-version'])
    if rc != 0:
        raise ProcessError('%s -version failed: %s' % (binary, (err or out).strip()))
    version = parse_version(out)
    rc, out, err = run([binary, '-machine', 'help'])
    if rc != 0:
        raise ProcessError('%s -machine help failed: %s' % (binary, (err or out).strip()))
    machines, default = parse_machine_types(out)
    return {'path': binary, 'version': version, 'machines': machines, 'default_machine': default}


def parse_cpu_models(text):
    """CPU model names from ``-cpu help`` output."""
    models = set()
    for line in (text or '').splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == 'x86':
            models.add(words[1])
    return models


def query_cpu_models(run, binary):
    rc, out, err = run([binary, '-cpu', 'help'])
    if rc != 0:
        raise ProcessError('%s -cpu help failed: %s' % (binary, (err or out).strip()))
    return parse_cpu_models(out)


def pin_machine(info, machine):
    """The versioned machine type behind an alias ('pc' -> 'pc-i440fx-7.2').

    Migration needs the same machine type on both ends; an alias may point
    elsewhere on a newer QEMU, a versioned name does not.
    """
    machines = info['machines']
    wanted = machine or info['default_machine'] or 'pc'
    if wanted not in machines:
        raise ValidationError('machine type %s is not known to %s (QEMU %s)'
                              % (wanted, info['path'], version_string(info['version'])))
    return machines[wanted] or wanted


def version_string(version):
    return '.'.join(str(part) for part in version) if version else 'unknown'


def kvm_usable(device=KVM_DEVICE):
    """(usable, reason): whether KVM can be opened and speaks the stable API."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, '%s: %s' % (device, err.strerror)
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
    except OSError as err:
        return False, '%s: KVM_GET_API_VERSION failed: %s' % (device, err.strerror)
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, '%s: unexpected KVM API version %s' % (device, version)
    return True, None


def resolve_accel(accel):
    """The accelerator to run with: 'auto' becomes kvm when usable, else tcg."""
    if accel in (None, 'auto'):
        return 'kvm' if kvm_usable()[0] else 'tcg'
    if accel == 'kvm':
        usable, reason = kvm_usable()
        if not usable:
            raise ValidationError('accel kvm requested but KVM is not usable (%s)' % reason)
    return accel
