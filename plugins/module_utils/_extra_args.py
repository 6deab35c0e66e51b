# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What of ``extra_args`` may reach QEMU: the guest-visible device model only.

``extra_args`` travels with a guest: it is stored in the definition and sent
by a migration source to the target, which starts QEMU as root with it. So
nothing in it may reach the host side of QEMU: no ``-incoming``, pidfile,
monitor, chardev, netdev, drive, object, user, sandbox, chroot or daemon
option, no device that opens a host file, device or socket (``loader``,
``vfio-pci``, ``usb-host``, ...), and no property naming a host resource
(``romfile=``, ``chardev=``, ``file=``, ...). What is allowed is a short list
of options that shape the virtual hardware, each value checked (anonymous
guest RAM, ``-object memory-backend-ram`` with ``-machine memory-backend=``,
included). Pure.
"""

import re

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError

# Properties that name something on the node: a file, a device, a socket, a
# backend object, a file descriptor or a helper program.
HOST_PROPERTIES = frozenset((
    'audiodev', 'backend', 'bootfile', 'chardev', 'dir', 'downscript', 'drive', 'fd', 'fds', 'file',
    'filename', 'fsdev', 'helper', 'host', 'hostaddr', 'hostbus', 'hostdevice', 'hostport', 'iothread',
    'mem-path', 'memdev', 'netdev', 'path', 'rng', 'romfile', 'rootdir', 'script', 'socket', 'splash', 'sysfsdev',
    'vhostfd', 'vhostfds',
))
# Device drivers that reach host resources whatever their properties say.
HOST_DRIVER_PATTERN = re.compile(
    r'.*(vfio|vhost|usb-host|usb-redir|loader|ivshmem|9p|virtfs|dimm|virtio-mem|virtio-pmem|'
    r'tpm|passthru|ccid|usb-mtp|virtserialport|virtconsole|serial|xen|memory-backend|ipmi).*')
# Ids the collection gives its own devices and backends.
RESERVED_ID_PATTERN = re.compile(r'(disk|net|scsi|vnc|hvops)[0-9a-z_-]*')
TOKEN_PATTERN = re.compile(r'[A-Za-z0-9_.:+/-]+')
VALUE_PATTERN = re.compile(r'[A-Za-z0-9_.:+/@ -]*')
RTC_KEYS = ('base', 'clock', 'driftfix')
BOOT_KEYS = ('order', 'once', 'menu', 'strict', 'reboot-timeout', 'splash-time')
VGA_TYPES = ('std', 'cirrus', 'virtio', 'qxl', 'none')
MEMORY_BACKEND_KEYS = ('id', 'size', 'prealloc', 'merge', 'dump', 'share')


def split_options(value):
    """QEMU's comma-separated option string as a list (``,,`` is a literal comma)."""
    parts, current, index = [], [], 0
    while index < len(value):
        char = value[index]
        if char == ',':
            if value[index + 1:index + 2] == ',':
                current.append(',')
                index += 2
                continue
            parts.append(''.join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append(''.join(current))
    return parts


def _refuse(option, value, why):
    raise ValidationError('extra_args: %s %s is not allowed: %s (extra_args may only shape the virtual'
                          ' hardware: -device, -global, -smbios, -rtc, -boot, -k, -vga, -usb, -no-hpet,'
                          ' -object memory-backend-ram, -machine memory-backend)' % (option, value, why))


def _pairs(option, value, first_is_name=False):
    """[(key, value)] of an option string, each part checked for stray syntax."""
    pairs = []
    for index, part in enumerate(split_options(value)):
        key, sep, item = part.partition('=')
        if not sep and index == 0 and first_is_name:
            key, item = 'driver', key
        elif not sep:
            _refuse(option, value, 'part %r is not key=value' % part)
        if not TOKEN_PATTERN.fullmatch(key) or not VALUE_PATTERN.fullmatch(item):
            _refuse(option, value, 'part %r holds characters outside letters, digits and "_.:+/@- "' % part)
        pairs.append((key, item))
    return pairs


def _check_properties(option, value, pairs):
    for key, item in pairs:
        prop = key.rsplit('.', 1)[-1]
        if prop in HOST_PROPERTIES:
            _refuse(option, value, 'property %s names a host resource' % prop)
        if prop == 'id' and RESERVED_ID_PATTERN.fullmatch(item):
            _refuse(option, value, 'id %s is reserved for the devices hvops.kvm creates' % item)


def _check_device(option, value):
    pairs = _pairs(option, value, first_is_name=True)
    driver = dict(pairs).get('driver', '')
    if not driver or driver == 'help' or HOST_DRIVER_PATTERN.fullmatch(driver):
        _refuse(option, value, 'device %s reaches host resources' % (driver or '(none)'))
    _check_properties(option, value, pairs)


def _check_global(option, value):
    pairs = _pairs(option, value)
    for key, _item in pairs:
        if '.' not in key and key not in ('driver', 'property', 'value'):
            _refuse(option, value, 'give DRIVER.PROPERTY=VALUE')
        if HOST_DRIVER_PATTERN.fullmatch(key.rsplit('.', 1)[0]):
            _refuse(option, value, 'driver %s reaches host resources' % key.rsplit('.', 1)[0])
    _check_properties(option, value, pairs)
    for key, item in pairs:
        if key in ('driver', 'property') and (HOST_DRIVER_PATTERN.fullmatch(item) or item in HOST_PROPERTIES):
            _refuse(option, value, '%s %s reaches host resources' % (key, item))


def _check_smbios(option, value):
    pairs = _pairs(option, value)
    if not pairs or pairs[0][0] != 'type':
        _refuse(option, value, 'give type=N first (reading SMBIOS tables from a host file is not allowed)')
    _check_properties(option, value, pairs)


def _keys_check(keys):
    def check(option, value):
        for key, _item in _pairs(option, value, first_is_name=option == '-boot'):
            if key not in keys and not (option == '-boot' and key == 'driver'):
                _refuse(option, value, 'only %s may be set' % ', '.join(keys))
    return check


def _check_object(option, value):
    """Only anonymous guest RAM: memory-backend-ram (no file, no host NUMA policy)."""
    pairs = _pairs(option, value, first_is_name=True)
    if pairs[0] not in (('driver', 'memory-backend-ram'), ('qom-type', 'memory-backend-ram')):
        _refuse(option, value, 'the only object allowed is memory-backend-ram (anonymous guest RAM)')
    for key, _item in pairs[1:]:
        if key not in MEMORY_BACKEND_KEYS:
            _refuse(option, value, 'memory-backend-ram takes only %s' % ', '.join(MEMORY_BACKEND_KEYS))
    _check_properties(option, value, pairs)


def _check_machine(option, value):
    for key, _item in _pairs(option, value):
        if key != 'memory-backend':
            _refuse(option, value, 'only memory-backend=ID may be set (the machine type is the spec\'s)')


def _check_word(option, value):
    if not TOKEN_PATTERN.fullmatch(value):
        _refuse(option, value, 'give a plain word')


def _check_vga(option, value):
    if value not in VGA_TYPES:
        _refuse(option, value, 'choose from %s' % ', '.join(VGA_TYPES))


# option -> value check; None: a flag without a value.
ALLOWED_OPTIONS = {
    '-device': _check_device,
    '-global': _check_global,
    '-smbios': _check_smbios,
    '-rtc': _keys_check(RTC_KEYS),
    '-boot': _keys_check(BOOT_KEYS),
    '-k': _check_word,
    '-vga': _check_vga,
    '-usb': None,
    '-no-hpet': None,
    '-object': _check_object,
    '-machine': _check_machine,
}


def check_extra_args(args):
    """The extra_args list, refused with ValidationError unless every option
    is allowed and every value passes its option's check."""
    if not isinstance(args, list) or not all(isinstance(word, str) for word in args):
        raise ValidationError('extra_args must be a list of strings')
    index = 0
    while index < len(args):
        option = args[index]
        if option.startswith('--'):
            option = option[1:]
        if option not in ALLOWED_OPTIONS:
            _refuse(args[index], '', 'only options that shape the virtual hardware are taken')
        check = ALLOWED_OPTIONS[option]
        if check is None:
            index += 1
            continue
        if index + 1 >= len(args):
            _refuse(option, '', 'it needs a value')
        check(option, args[index + 1])
        index += 2
    return list(args)
