"""extra_args may shape the guest's virtual hardware and nothing on the node (issue 10)."""
import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._extra_args import check_extra_args, split_options


@pytest.mark.parametrize('args', [
    [],
    ['-device', 'virtio-rng-pci'],
    ['-device', 'e1000,id=extra0'],
    ['-device', 'driver=pvpanic'],
    ['-global', 'kvm-pit.lost_tick_policy=discard'],
    ['-smbios', 'type=1,manufacturer=hvops,product=test vm'],
    ['-rtc', 'base=utc,clock=host,driftfix=slew'],
    ['-boot', 'menu=on,splash-time=100'],
    ['-k', 'de'],
    ['-vga', 'virtio'],
    ['-usb', '-no-hpet', '-device', 'usb-kbd'],
    ['-object', 'memory-backend-ram,id=ram0,size=512M,prealloc=on', '-machine', 'memory-backend=ram0'],
])
def test_guest_visible_options_are_taken(args):
    assert check_extra_args(list(args)) == args


@pytest.mark.parametrize('args, words', [
    (['-incoming', 'exec:touch /tmp/pwned'], '-incoming'),
    (['--incoming', 'tcp:0:4444'], '--incoming'),
    (['-qmp', 'tcp:0.0.0.0:4444,server=on,wait=off'], '-qmp'),
    (['-monitor', 'tcp:0.0.0.0:4445,server=on'], '-monitor'),
    (['-pidfile', '/tmp/other.pid'], '-pidfile'),
    (['-daemonize'], '-daemonize'),
    (['-runas', 'root'], '-runas'),
    (['-sandbox', 'off'], '-sandbox'),
    (['-chroot', '/'], '-chroot'),
    (['-chardev', 'socket,id=c,path=/run/x'], '-chardev'),
    (['-netdev', 'tap,id=n,script=/tmp/evil'], '-netdev'),
    (['-drive', 'file=/etc/shadow'], '-drive'),
    (['-object', 'memory-backend-file,id=m,mem-path=/etc'], 'memory-backend-ram'),
    (['-object', 'memory-backend-ram,id=m,size=1G,host-nodes=0,policy=bind'], 'takes only'),
    (['-object', 'secret,id=s,file=/etc/shadow'], 'memory-backend-ram'),
    (['-object', 'memory-backend-ram,id=disk0,size=1G'], 'reserved'),
    (['-machine', 'accel=kvm'], 'memory-backend'),
    (['-machine', 'pc,memory-backend=ram0'], 'key=value'),
    (['-kernel', '/etc/shadow'], '-kernel'),
    (['-fw_cfg', 'name=opt/x,file=/etc/shadow'], '-fw_cfg'),
    (['-readconfig', '/tmp/x.cfg'], '-readconfig'),
    (['-S'], '-S'),
    (['-device', 'loader,file=/etc/shadow,addr=0x1000'], 'loader'),
    (['-device', 'vfio-pci,host=01:00.0'], 'vfio-pci'),
    (['-device', 'usb-host,hostbus=1,hostaddr=2'], 'usb-host'),
    (['-device', 'vhost-vsock-pci,guest-cid=3'], 'vhost'),
    (['-device', 'e1000,romfile=/etc/shadow'], 'romfile'),
    (['-device', 'virtserialport,chardev=c0'], 'virtserialport'),
    (['-device', 'e1000,netdev=net0'], 'netdev'),
    (['-device', 'virtio-blk-pci,drive=disk0'], 'drive'),
    (['-device', 'e1000,id=disk0'], 'reserved'),
    (['-device', 'e1000,romfile=x,,file=/etc/shadow'], 'romfile'),
    (['-device', 'e1000\n-S'], 'characters'),
    (['-device', 'help'], 'help'),
    (['-device'], 'needs a value'),
    (['-global', 'e1000.romfile=/etc/shadow'], 'romfile'),
    (['-global', 'driver=e1000,property=romfile,value=/etc/shadow'], 'romfile'),
    (['-smbios', 'file=/etc/shadow'], 'type=N'),
    (['-boot', 'splash=/etc/shadow'], 'only'),
    (['-rtc', 'base=utc,file=/x'], 'only'),
    (['-vga', 'std,x=1'], 'choose'),
    ([5], 'list of strings'),
])
def test_host_side_options_are_refused(args, words):
    with pytest.raises(ValidationError) as err:
        check_extra_args(args)
    assert words in str(err.value)


def test_split_options_reads_doubled_commas_as_one():
    assert split_options('a=1,b=x,,y,c') == ['a=1', 'b=x,y', 'c']
    assert split_options('') == ['']
