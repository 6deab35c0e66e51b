from ansible_collections.hvops.kvm.plugins.module_utils._cmdline import build_argv, opt_value, vnc_has_password
from ansible_collections.hvops.kvm.plugins.module_utils._qemu_user import QemuUser
from ansible_collections.hvops.kvm.plugins.module_utils._taps import host_side_mac, tap_name
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout
from ansible_collections.hvops.kvm.plugins.module_utils._spec import normalize_spec

QEMU = '/usr/bin/qemu-system-x86_64'
PATHS = NodeLayout('/run/hvops-kvm').paths('web')


def argv_for(accel='tcg', **params):
    params.setdefault('machine', 'pc-i440fx-7.2')
    return build_argv(normalize_spec('web', params), PATHS, QEMU, accel)


def value(argv, option, nth=0):
    found = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == option]
    return found[nth] if len(found) > nth else None


def test_basics_follow_the_spec():
    argv = argv_for(memory=1024, vcpus=4)
    assert argv[0] == QEMU
    assert value(argv, '-name') == 'web'
    assert value(argv, '-m') == '1024M'
    assert value(argv, '-smp') == '4'
    assert value(argv, '-machine') == 'type=pc-i440fx-7.2'
    assert value(argv, '-accel') == 'tcg'
    assert value(argv, '-pidfile') == '/run/hvops-kvm/pid/web.pid'
    assert '-nodefaults' in argv
    assert '-daemonize' not in argv, 'the library detaches QEMU: -daemonize forks after the sandbox is on'
    assert '-S' not in argv and '-incoming' not in argv
    assert all(isinstance(word, str) for word in argv)


def test_acpi_off_and_cpu_and_uuid():
    argv = argv_for(acpi=False, cpu_model='qemu64', uuid='6f9619ff-8b86-d011-b42d-00c04fc964ff', accel='kvm')
    assert value(argv, '-machine') == 'type=pc-i440fx-7.2,acpi=off'
    assert value(argv, '-cpu') == 'qemu64'
    assert value(argv, '-uuid') == '6f9619ff-8b86-d011-b42d-00c04fc964ff'


def test_monitor_and_serial_sockets():
    argv = argv_for()
    assert value(argv, '-qmp') == 'unix:/run/hvops-kvm/ctrl/web.qmp,server=on,wait=off'
    assert value(argv, '-monitor') == 'unix:/run/hvops-kvm/ctrl/web.monitor,server=on,wait=off'
    assert value(argv, '-serial') == 'unix:/run/hvops-kvm/ctrl/web.serial,server=on,wait=off'
    assert value(argv_for(serial_console=False), '-serial') is None


def test_first_disk_boots_and_options_reach_the_drive():
    argv = argv_for(disks=[
        {'path': '/srv/a,b.img'},
        {'path': '/srv/b.qcow2', 'format': 'qcow2', 'interface': 'ide', 'cache': 'none'},
        {'path': '/srv/c.iso', 'interface': 'scsi', 'readonly': True},
    ])
    assert value(argv, '-drive', 0) == 'file=/srv/a,,b.img,format=raw,if=none,id=disk0'
    assert value(argv, '-drive', 1) == 'file=/srv/b.qcow2,format=qcow2,if=none,id=disk1,cache=none'
    assert value(argv, '-drive', 2) == 'file=/srv/c.iso,format=raw,if=none,id=disk2,readonly=on'
    devices = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == '-device']
    assert devices[0] == 'virtio-scsi-pci,id=scsi0'
    assert devices[1] == 'virtio-blk-pci,drive=disk0,bootindex=1'
    assert devices[2] == 'ide-hd,drive=disk1'
    assert devices[3] == 'scsi-hd,drive=disk2,bus=scsi0.0'


def test_kernel_root_console_and_extra_words():
    argv = argv_for(kernel='/boot/vmlinuz', initrd='/boot/initrd', root='/dev/vda1', kernel_args='quiet')
    assert value(argv, '-kernel') == '/boot/vmlinuz'
    assert value(argv, '-initrd') == '/boot/initrd'
    assert value(argv, '-append') == 'root=/dev/vda1 ro console=ttyS0,115200 quiet'
    argv = argv_for(kernel='/boot/vmlinuz', root='/dev/sda', serial_console=False)
    assert value(argv, '-append') == 'root=/dev/sda ro'
    assert value(argv, '-initrd') is None


def test_vnc_uses_the_bind_address_not_a_parameter_name():
    argv = argv_for(vnc_bind_address='192.0.2.7', vnc_display=3)
    assert value(argv, '-vnc') == '192.0.2.7:3'
    assert value(argv, '-display') is None
    assert 'usb-tablet' in argv
    argv = argv_for(vnc_bind_address='::1', vnc_tablet=False)
    assert value(argv, '-vnc') == '[::1]:0'
    assert 'usb-tablet' not in argv
    assert value(argv_for(), '-display') == 'none'


def test_vnc_password_flag():
    spec = normalize_spec('web', {'vnc_bind_address': '127.0.0.1', 'machine': 'pc'})
    assert value(build_argv(spec, PATHS, QEMU, 'tcg', vnc_password=True), '-vnc') == '127.0.0.1:0,password=on'


def test_nics_bridge_and_user():
    spec = normalize_spec('web', {'machine': 'pc', 'nics': [
        {'type': 'bridge', 'bridge': 'br0', 'mac': '52:54:00:00:00:01', 'model': 'e1000'},
        {'type': 'user', 'mac': '52:54:00:00:00:02'}]})
    argv = build_argv(spec, PATHS, QEMU, 'tcg', taps={0: 'hk01234567n0'})
    assert value(argv, '-netdev', 0) == 'tap,id=net0,ifname=hk01234567n0,script=no,downscript=no'
    assert value(argv, '-netdev', 1) == 'user,id=net1'
    assert 'e1000,netdev=net0,mac=52:54:00:00:00:01' in argv
    assert 'virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02' in argv
    assert value(argv_for(), '-netdev') is None


def test_paused_incoming_and_extra_args_come_last():
    spec = normalize_spec('web', {'machine': 'pc', 'extra_args': ['-rtc', 'base=utc']})
    argv = build_argv(spec, PATHS, QEMU, 'tcg', incoming='defer')
    assert argv[-5:] == ['-S', '-incoming', 'defer', '-rtc', 'base=utc']
    assert '-S' in build_argv(spec, PATHS, QEMU, 'tcg', paused=True)


def test_the_builder_is_deterministic():
    assert argv_for(nics=[{'type': 'user'}]) == argv_for(nics=[{'type': 'user'}])


def test_taps_are_named_per_run_dir_and_instance_and_carry_no_guest_mac():
    name = tap_name('/run/hvops-kvm', 'web', 3)
    assert len(name) <= 15 and name.startswith('hk') and name.endswith('n3')
    assert tap_name('/run/hvops-kvm', 'web', 3) == name
    assert tap_name('/run/other', 'web', 3) != name
    assert tap_name('/run/hvops-kvm', 'web2', 3) != name
    assert len(tap_name('/run/hvops-kvm', 'x' * 63, 255)) <= 15
    assert host_side_mac('52:54:00:12:34:56') == 'fe:54:00:12:34:56'


def test_qemu_drops_to_its_user_under_the_strictest_sandbox_that_allows():
    user = build_argv(normalize_spec('web', {'machine': 'pc'}), PATHS, QEMU, 'tcg',
                      user_args=QemuUser('hvops-qemu', 990, 990, [990]).argv())
    assert value(user, '-runas') == 'hvops-qemu'
    assert value(user, '-sandbox') == 'on,obsolete=deny,spawn=deny,resourcecontrol=deny'
    root = build_argv(normalize_spec('web', {'machine': 'pc'}), PATHS, QEMU, 'tcg',
                      user_args=QemuUser('root', 0, 0, [0]).argv())
    assert value(root, '-runas') is None
    assert value(root, '-sandbox') == 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'


def test_vnc_has_password_reads_our_own_argv():
    spec = normalize_spec('web', {'vnc_bind_address': '127.0.0.1', 'machine': 'pc'})
    assert vnc_has_password(build_argv(spec, PATHS, QEMU, 'tcg', vnc_password=True))
    assert not vnc_has_password(build_argv(spec, PATHS, QEMU, 'tcg'))


def test_option_values_escape_commas():
    assert opt_value('a,b,,c') == 'a,,b,,,,c'


def test_guest_agent_channel_and_cloud_init_seed():
    argv = argv_for(guest_agent=True, disks=[{'path': '/srv/a.img'}], cloud_init={'hostname': 'web1'})
    assert value(argv, '-chardev') == 'socket,id=qga0,path=/run/hvops-kvm/ctrl/web.qga,server=on,wait=off'
    assert 'virtserialport,bus=qga0-serial.0,chardev=qga0,name=org.qemu.guest_agent.0' in argv
    # The seed comes after the disks, read-only, and never boots.
    assert value(argv, '-drive', 1) == 'file=/run/hvops-kvm/seed/web.iso,format=raw,if=none,id=seed0,readonly=on'
    assert value(argv, '-device', 1) == 'virtio-blk-pci,drive=seed0'
    plain = argv_for(disks=[{'path': '/srv/a.img'}])
    assert '-chardev' not in plain and value(plain, '-drive', 1) is None
