# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's spec: normalised from user input and checked before anything
is written or started.

The spec is a plain JSON-able dict. ``normalize_spec`` fills defaults and
refuses bad values; ``check_host_files`` refuses paths that do not exist on
this node. Neither touches anything.
"""

import hashlib
import os
import re
import uuid

from ansible_collections.hvops.kvm.plugins.module_utils import _seed, _values
from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._extra_args import check_extra_args
from ansible_collections.hvops.kvm.plugins.module_utils._identity import is_qemu_program
from ansible_collections.hvops.kvm.plugins.module_utils._layout import validate_name
from ansible_collections.hvops.kvm.plugins.module_utils._runtime import ADDED_SPEC_KEYS, load_definition

DISK_FORMATS = ('raw', 'qcow2')
DISK_INTERFACES = ('virtio', 'ide', 'scsi')
DISK_CACHE_MODES = ('none', 'writeback', 'writethrough', 'directsync', 'unsafe')
NIC_TYPES = ('bridge', 'user')
NIC_MODELS = ('virtio', 'e1000', 'rtl8139')
ACCELERATORS = ('auto', 'kvm', 'tcg')
MAC_PATTERN = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
# Machine types and CPU models as QEMU names them (CPU models may carry
# comma-separated feature flags: qemu64,+ssse3).
MACHINE_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
CPU_MODEL_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*(,[+-]?[A-Za-z0-9._-]+(=[A-Za-z0-9._-]+)?)*')
# Limits QEMU itself sets on the pc and q35 machines (MiB of RAM is what a
# 64-bit host can map; vCPUs: q35's maximum).
MAX_MEMORY_MB = 16 * 1024 * 1024
MAX_VCPUS = 288
KERNEL_ARGS_MAX = 4096
# Locally administered prefix QEMU itself uses for generated MACs.
MAC_PREFIX = '52:54:00'

# Spec keys with their defaults; None means "not set".
SPEC_DEFAULTS = {
    'memory': 512,
    'vcpus': 1,
    'machine': None,
    'cpu_model': None,
    'uuid': None,
    'accel': 'auto',
    'acpi': True,
    'disks': [],
    'kernel': None,
    'initrd': None,
    'root': None,
    'kernel_args': None,
    'serial_console': True,
    'vnc_bind_address': None,
    'vnc_display': 0,
    'vnc_tablet': True,
    'nics': [],
    'extra_args': [],
    'qemu_binary': None,
    # guest_agent and cloud_init
    **ADDED_SPEC_KEYS
}
DISK_DEFAULTS = {'format': 'raw', 'interface': 'virtio', 'readonly': False, 'cache': None}
NIC_DEFAULTS = {'type': 'user', 'bridge': None, 'mac': None, 'model': 'virtio'}


def _choice(value, choices, what, name):
    if value not in choices:
        raise ValidationError('unknown %s %r (choose from %s)' % (what, value, ', '.join(choices)),
                              instance=name)
    return value


def _positive(value, what, name, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or \
            (high is not None and value > high):
        raise ValidationError('%s must be a positive whole number%s, got %r'
                              % (what, ' up to %d' % high if high else '', value), instance=name)
    return value


def _flag(value, what, name):
    if not isinstance(value, bool):
        raise ValidationError('%s must be true or false, got %r' % (what, value), instance=name)
    return value


def _text(value, what, name, pattern=None, limit=255):
    """A string of printable characters (no newline), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or \
            not all(char.isprintable() for char in value) or \
            (pattern is not None and not pattern.fullmatch(value)):
        raise ValidationError('invalid %s %r' % (what, value), instance=name)
    return value


def _absolute(path, what, name):
    if path is None:
        return None
    if not isinstance(path, str) or not os.path.isabs(path) or '\0' in path or '\n' in path:
        raise ValidationError('%s must be an absolute path, got %r' % (what, path), instance=name)
    return os.path.normpath(path)


def _list_of_dicts(value, what, name):
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValidationError('%s must be a list of dictionaries, got %r' % (what, value), instance=name)
    return value


def qemu_binary(value, name=None):
    """A QEMU binary the identity check will recognise (qemu-system-*, kvm,
    qemu-kvm), or None for the node's default."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or '\n' in value or '\0' in value or \
            not is_qemu_program(value):
        raise ValidationError('qemu_binary %r is not named like a QEMU binary (qemu-system-ARCH, kvm or'
                              ' qemu-kvm): a guest started from it could never be found and managed'
                              ' again' % (value,), instance=name)
    return value


def generated_mac(name, index):
    """A stable MAC for NIC ``index`` of instance ``name``: reruns keep it."""
    digest = hashlib.sha256(('%s/%d' % (name, index)).encode('utf-8')).hexdigest()
    return '%s:%s:%s:%s' % (MAC_PREFIX, digest[0:2], digest[2:4], digest[4:6])


def normalize_mac(mac, name):
    if not isinstance(mac, str):
        raise ValidationError('invalid MAC address %r' % (mac,), instance=name)
    text = mac.strip().lower().replace('-', ':')
    if not MAC_PATTERN.fullmatch(text):
        raise ValidationError('invalid MAC address %r' % mac, instance=name)
    if int(text[:2], 16) & 1:
        raise ValidationError('MAC address %r is a multicast address' % mac, instance=name)
    return text


def _normalize_disk(disk, index, name):
    if not isinstance(disk, dict) or not disk.get('path'):
        raise ValidationError('disk %d needs a path' % index, instance=name)
    unknown = set(disk) - set(DISK_DEFAULTS) - {'path'}
    if unknown:
        raise ValidationError('disk %d has unknown keys: %s' % (index, ', '.join(sorted(unknown))), instance=name)
    out = dict(DISK_DEFAULTS)
    out.update((k, v) for k, v in disk.items() if v is not None)
    out['path'] = _absolute(out['path'], 'disk %d path' % index, name)
    _choice(out['format'], DISK_FORMATS, 'disk format', name)
    _choice(out['interface'], DISK_INTERFACES, 'disk interface', name)
    if out['cache'] is not None:
        _choice(out['cache'], DISK_CACHE_MODES, 'disk cache mode', name)
    _flag(out['readonly'], 'disk %d readonly' % index, name)
    if out['readonly'] and out['interface'] == 'ide':
        raise ValidationError('disk %d: QEMU cannot attach a read-only disk as an IDE hard disk;'
                              ' use interface virtio or scsi' % index, instance=name)
    return out


def _normalize_nic(nic, index, name):
    if not isinstance(nic, dict):
        raise ValidationError('nic %d must be a dictionary' % index, instance=name)
    unknown = set(nic) - set(NIC_DEFAULTS)
    if unknown:
        raise ValidationError('nic %d has unknown keys: %s' % (index, ', '.join(sorted(unknown))), instance=name)
    out = dict(NIC_DEFAULTS)
    out.update((k, v) for k, v in nic.items() if v is not None)
    _choice(out['type'], NIC_TYPES, 'nic type', name)
    _choice(out['model'], NIC_MODELS, 'nic model', name)
    if out['type'] == 'bridge':
        try:
            _values.ifname(out['bridge'], 'the bridge')
        except ValidationError as err:
            raise ValidationError('nic %d: a bridged NIC needs a valid bridge name: %s'
                                  % (index, err.msg), instance=name)
    elif out['bridge']:
        raise ValidationError('nic %d: bridge is only valid with type bridge' % index, instance=name)
    out['mac'] = normalize_mac(out['mac'], name) if out['mac'] else generated_mac(name, index)
    return out


def normalize_spec(name, params):
    """The full spec from user parameters (None means default). Pure."""
    validate_name(name)
    unknown = set(params) - set(SPEC_DEFAULTS)
    if unknown:
        raise ValidationError('unknown spec keys: %s' % ', '.join(sorted(unknown)), instance=name)
    spec = dict(SPEC_DEFAULTS)
    spec.update((k, v) for k, v in params.items() if v is not None)
    spec['name'] = name
    _positive(spec['memory'], 'memory (MiB)', name, MAX_MEMORY_MB)
    _positive(spec['vcpus'], 'vcpus', name, MAX_VCPUS)
    _choice(spec['accel'], ACCELERATORS, 'accelerator', name)
    spec['machine'] = _text(spec['machine'], 'machine type', name, MACHINE_PATTERN)
    spec['cpu_model'] = _text(spec['cpu_model'], 'cpu_model', name, CPU_MODEL_PATTERN)
    for key in ('acpi', 'serial_console', 'vnc_tablet', 'guest_agent'):
        _flag(spec[key], key, name)
    if spec['uuid'] is not None:
        try:
            spec['uuid'] = str(uuid.UUID(str(spec['uuid'])))
        except ValueError:
            raise ValidationError('invalid UUID %r' % spec['uuid'], instance=name)
    for key in ('kernel', 'initrd'):
        spec[key] = _absolute(spec[key], key, name)
    spec['root'] = _text(spec['root'], 'root', name)
    spec['kernel_args'] = _text(spec['kernel_args'], 'kernel_args', name, limit=KERNEL_ARGS_MAX)
    if spec['initrd'] and not spec['kernel']:
        raise ValidationError('initrd is set but kernel is not', instance=name)
    if spec['kernel'] and not spec['root']:
        raise ValidationError('kernel is set but root is not: give the root device (e.g. /dev/vda1)',
                              instance=name)
    if (spec['root'] or spec['kernel_args']) and not spec['kernel']:
        raise ValidationError('root and kernel_args need a kernel', instance=name)
    if spec['vnc_bind_address'] is not None:
        try:
            spec['vnc_bind_address'] = _values.ip_address(spec['vnc_bind_address'], 'the VNC bind address')
        except ValidationError as err:
            raise ValidationError(err.msg, instance=name)
    if isinstance(spec['vnc_display'], bool) or not isinstance(spec['vnc_display'], int) or \
            not 0 <= spec['vnc_display'] < 59636:
        raise ValidationError('vnc_display must be a whole number from 0 (port 5900), got %r'
                              % spec['vnc_display'], instance=name)
    _list_of_dicts(spec['disks'], 'disks', name)
    _list_of_dicts(spec['nics'], 'nics', name)
    spec['disks'] = [_normalize_disk(d, i, name) for i, d in enumerate(spec['disks'])]
    paths = [d['path'] for d in spec['disks']]
    if len(set(paths)) != len(paths):
        raise ValidationError('the same disk is given twice', instance=name)
    spec['nics'] = [_normalize_nic(n, i, name) for i, n in enumerate(spec['nics'])]
    macs = [n['mac'] for n in spec['nics']]
    if len(set(macs)) != len(macs):
        raise ValidationError('two NICs have the same MAC address', instance=name)
    try:
        spec['extra_args'] = check_extra_args(spec['extra_args'])
    except ValidationError as err:
        raise ValidationError(err.msg, instance=name)
    spec['qemu_binary'] = qemu_binary(spec['qemu_binary'], name)
    spec['cloud_init'] = _seed.normalize(spec['cloud_init'], name)
    return spec


def shown(spec):
    """A spec as results and diffs show it: the cloud-init documents only as
    a digest (a user-data may hold secrets)."""
    if not isinstance(spec, dict) or not spec.get('cloud_init'):
        return spec
    return dict(spec, cloud_init=_seed.summary(spec['cloud_init']))


def check_host_files(spec, qemu_user=None):
    """Refuse a spec whose kernel, initrd or disks do not exist on this node,
    or whose disks the QEMU user (``qemu_user``) could not open: QEMU opens
    them again as that user when a migration hands them over."""
    name = spec['name']
    for key in ('kernel', 'initrd'):
        if spec[key] and not os.path.isfile(spec[key]):
            raise ValidationError('%s %s does not exist' % (key, spec[key]), instance=name)
        # QEMU reads it as root, and the guest can read it back (fw_cfg): only
        # what its user could read itself may be handed to it.
        if spec[key] and qemu_user is not None and not qemu_user.can_open(spec[key], write=False):
            raise ValidationError('%s %s is not readable by the QEMU user %s (the guest could read it back)'
                                  % (key, spec[key], qemu_user.name), instance=name)
    for index, disk in enumerate(spec['disks']):
        if not os.path.exists(disk['path']):
            raise ValidationError('disk %d (%s) does not exist; disk images are never created'
                                  ' by this module' % (index, disk['path']), instance=name)
        if not os.access(disk['path'], os.R_OK if disk['readonly'] else os.R_OK | os.W_OK):
            raise ValidationError('disk %d (%s) is not %s by this user' % (
                index, disk['path'], 'readable' if disk['readonly'] else 'readable and writable'),
                instance=name)
        if qemu_user is not None and not qemu_user.can_open(disk['path'], write=not disk['readonly']):
            raise ValidationError(
                'disk %d (%s) is not %s by the QEMU user %s (it opens the disk again during a'
                ' migration): give it to that user (chown %s), or to its group with mode 0660, and'
                ' make every directory above it searchable' % (
                    index, disk['path'], 'readable' if disk['readonly'] else 'readable and writable',
                    qemu_user.name, qemu_user.name), instance=name)


def disk_clash(layout, name, spec):
    """A sentence about the first disk of spec another instance defined in
    layout uses too (where at least one of them writes), or None."""
    for other in layout.defined_names():
        if other == name:
            continue
        other_spec = load_definition(layout.paths(other))
        clashes = shared_disks(spec, other_spec) if other_spec else []
        if clashes:
            return 'disk %s is already used by instance %s' % (clashes[0], other)
    return None


def shared_disks(spec, other):
    """Disk paths both specs use where at least one of them writes."""
    mine = dict((os.path.realpath(d['path']), d['readonly']) for d in spec['disks'])
    clashes = []
    for disk in other.get('disks', []):
        path = os.path.realpath(disk['path'])
        if path in mine and not (mine[path] and disk.get('readonly')):
            clashes.append(disk['path'])
    return clashes
