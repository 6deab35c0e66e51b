# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""From an instance spec to the QEMU argv. Pure: an argv list, never a shell string."""

import ipaddress

DISK_DEVICES = {'virtio': 'virtio-blk-pci', 'ide': 'ide-hd', 'scsi': 'scsi-hd'}
NIC_DEVICES = {'virtio': 'virtio-net-pci', 'e1000': 'e1000', 'rtl8139': 'rtl8139'}
SERIAL_CONSOLE_ARG = 'console=ttyS0,115200'
VNC_BASE_PORT = 5900
AGENT_CHANNEL = 'org.qemu.guest_agent.0'


def opt_value(value):
    """Escape a value for QEMU's key=value option syntax (a comma is doubled)."""
    return str(value).replace(',', ',,')


def unix_server(path):
    return 'unix:%s,server=on,wait=off' % path


def vnc_address(spec, with_password):
    address = spec['vnc_bind_address']
    if ipaddress.ip_address(address).version == 6:
        address = '[%s]' % address
    value = '%s:%d' % (address, spec['vnc_display'])
    if with_password:
        value += ',password=on'
    return value


def vnc_has_password(argv):
    """Whether an argv of ours starts VNC with password authentication."""
    return any(word.endswith(',password=on') for index, word in enumerate(argv)
               if index and argv[index - 1] == '-vnc')


def kernel_append(spec):
    words = ['root=%s' % spec['root'], 'ro']
    if spec['serial_console']:
        words.append(SERIAL_CONSOLE_ARG)
    if spec['kernel_args']:
        words.append(spec['kernel_args'])
    return ' '.join(words)


def disk_args(spec):
    argv = []
    if any(d['interface'] == 'scsi' for d in spec['disks']):
        argv += ['-device', 'virtio-scsi-pci,id=scsi0']
    for index, disk in enumerate(spec['disks']):
        drive_id = 'disk%d' % index
        drive = ['file=%s' % opt_value(disk['path']), 'format=%s' % disk['format'],
                 'if=none', 'id=%s' % drive_id]
        if disk['readonly']:
            drive.append('readonly=on')
        if disk['cache']:
            drive.append('cache=%s' % disk['cache'])
        device = [DISK_DEVICES[disk['interface']], 'drive=%s' % drive_id]
        if disk['interface'] == 'scsi':
            device.append('bus=scsi0.0')
        if index == 0:
            # The first disk is the boot disk.
            device.append('bootindex=1')
        argv += ['-drive', ','.join(drive), '-device', ','.join(device)]
    return argv


def agent_args(paths):
    """The guest agent's channel: a virtio-serial port on a unix socket."""
    return ['-chardev', 'socket,id=qga0,path=%s,server=on,wait=off' % opt_value(paths.agent),
            '-device', 'virtio-serial-pci,id=qga0-serial',
            '-device', 'virtserialport,bus=qga0-serial.0,chardev=qga0,name=%s' % AGENT_CHANNEL]


def seed_args(paths):
    """The cloud-init seed, read-only, after the disks (never the boot disk)."""
    return ['-drive', 'file=%s,format=raw,if=none,id=seed0,readonly=on' % opt_value(paths.seed),
            '-device', 'virtio-blk-pci,drive=seed0']


def nic_args(spec, taps):
    argv = []
    for index, nic in enumerate(spec['nics']):
        netdev_id = 'net%d' % index
        if nic['type'] == 'bridge':
            # The library made the tap and put it on the bridge: QEMU runs no script.
            netdev = 'tap,id=%s,ifname=%s,script=no,downscript=no' % (netdev_id, taps[index])
        else:
            netdev = 'user,id=%s' % netdev_id
        device = '%s,netdev=%s,mac=%s' % (NIC_DEVICES[nic['model']], netdev_id, nic['mac'])
        argv += ['-netdev', netdev, '-device', device]
    return argv


def build_argv(spec, paths, qemu, accel, taps=None, vnc_password=False,
               paused=False, incoming=None, user_args=()):
    """The QEMU argv for a normalised spec whose machine type is pinned.

    ``accel`` is the resolved accelerator (kvm or tcg); ``taps`` maps the
    index of each bridged NIC to its tap; ``incoming`` is a ``-incoming``
    value for a migration target (which also starts paused); ``user_args``
    are the -runas and -sandbox options. QEMU runs in the foreground: the
    library detaches it (no -daemonize, which a sandbox denying spawn kills).
    """
    machine = 'type=%s' % spec['machine']
    if not spec['acpi']:
        machine += ',acpi=off'
    argv = [
        qemu,
        '-name', spec['name'],
        '-machine', machine,
        '-accel', accel,
        '-m', '%dM' % spec['memory'],
        '-smp', str(spec['vcpus']),
    ]
    if spec['cpu_model']:
        argv += ['-cpu', spec['cpu_model']]
    if spec['uuid']:
        argv += ['-uuid', spec['uuid']]
    argv += ['-pidfile', paths.pidfile, '-nodefaults', '-no-user-config']
    argv += list(user_args)
    argv += disk_args(spec)
    if spec.get('cloud_init'):
        argv += seed_args(paths)
    if spec['kernel']:
        argv += ['-kernel', spec['kernel']]
        if spec['initrd']:
            argv += ['-initrd', spec['initrd']]
        argv += ['-append', kernel_append(spec)]
    if spec['vnc_bind_address']:
        argv += ['-vga', 'std', '-vnc', vnc_address(spec, vnc_password)]
        if spec['vnc_tablet']:
            argv += ['-usb', '-device', 'usb-tablet']
    else:
        argv += ['-display', 'none']
    argv += ['-qmp', unix_server(paths.qmp), '-monitor', unix_server(paths.monitor)]
    if spec['serial_console']:
        argv += ['-serial', unix_server(paths.serial)]
    if spec.get('guest_agent'):
        argv += agent_args(paths)
    argv += nic_args(spec, taps or {})
    if paused or incoming:
        argv.append('-S')
    if incoming:
        argv += ['-incoming', incoming]
    argv += spec['extra_args']
    return argv
