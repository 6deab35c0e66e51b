import pytest

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.hvops.kvm.plugins.module_utils._spec import (
    check_host_files, generated_mac, normalize_spec, shared_disks)


def spec(**params):
    return normalize_spec('web', params)


def test_defaults_fill_a_minimal_spec():
    s = spec()
    assert s['name'] == 'web'
    assert s['memory'] == 512 and s['vcpus'] == 1
    assert s['accel'] == 'auto' and s['acpi'] is True and s['serial_console'] is True
    assert s['disks'] == [] and s['nics'] == [] and s['extra_args'] == []


def test_disk_defaults_and_normalised_path():
    s = spec(disks=[{'path': '/srv//a.img'},
                    {'path': '/srv/b.qcow2', 'format': 'qcow2', 'interface': 'scsi', 'readonly': True, 'cache': 'none'}])
    assert s['disks'][0] == {'path': '/srv/a.img', 'format': 'raw', 'interface': 'virtio',
                             'readonly': False, 'cache': None}
    assert s['disks'][1]['readonly'] is True and s['disks'][1]['cache'] == 'none'


@pytest.mark.parametrize('params, words', [
    ({'memory': 0}, 'memory'),
    ({'memory': -5}, 'memory'),
    ({'memory': True}, 'memory'),
    ({'vcpus': 0}, 'vcpus'),
    ({'accel': 'xen'}, 'accelerator'),
    ({'kernel': 'vmlinuz', 'root': '/dev/vda'}, 'absolute'),
    ({'kernel': '/boot/vmlinuz', 'initrd': 'initrd.img', 'root': '/dev/vda'}, 'absolute'),
    ({'kernel': '/boot/vmlinuz'}, 'root'),
    ({'initrd': '/boot/initrd'}, 'kernel'),
    ({'root': '/dev/vda1'}, 'kernel'),
    ({'disks': [{'path': 'rel.img'}]}, 'absolute'),
    ({'disks': [{'path': '/a.img', 'format': 'vmdk'}]}, 'disk format'),
    ({'disks': [{'path': '/a.img', 'interface': 'floppy'}]}, 'disk interface'),
    ({'disks': [{'path': '/a.img', 'cache': 'fast'}]}, 'cache'),
    ({'disks': [{'path': '/a.img', 'interface': 'ide', 'readonly': True}]}, 'read-only'),
    ({'disks': [{'path': '/a.img'}, {'path': '/a.img'}]}, 'twice'),
    ({'disks': [{}]}, 'path'),
    ({'nics': [{'mac': '52:54:00:zz:00:01'}]}, 'MAC'),
    ({'nics': [{'mac': '01:54:00:00:00:01'}]}, 'multicast'),
    ({'nics': [{'mac': '52:54:00:00:00:01'}, {'mac': '52:54:00:00:00:01'}]}, 'same MAC'),
    ({'nics': [{'type': 'bridge'}]}, 'bridge'),
    ({'nics': [{'type': 'bridge', 'bridge': 'br0; rm -rf /'}]}, 'bridge'),
    ({'nics': [{'type': 'user', 'bridge': 'br0'}]}, 'bridge'),
    ({'nics': [{'type': 'vde'}]}, 'nic type'),
    ({'vnc_bind_address': '0.0.0.0:5900'}, 'VNC bind address'),
    ({'vnc_bind_address': 'VNC_BIND_ADDRESS'}, 'VNC bind address'),
    ({'vnc_display': -1}, 'vnc_display'),
    ({'uuid': 'not-a-uuid'}, 'UUID'),
    ({'extra_args': ['-S', 3]}, 'extra_args'),
    ({'colour': 'red'}, 'unknown'),
])
def test_bad_values_are_refused_with_a_clear_message(params, words):
    with pytest.raises(ValidationError) as err:
        spec(**params)
    assert words in str(err.value)
    assert 'instance web' in str(err.value) or 'unknown' in str(err.value)


@pytest.mark.parametrize('name', ['', '../etc', 'a/b', '.hidden', '-x', 'a b', 'x' * 64, 'we\nb'])
def test_bad_names_are_refused(name):
    with pytest.raises(ValidationError):
        normalize_spec(name, {})


def test_generated_macs_are_stable_unicast_and_distinct():
    s1 = spec(nics=[{'type': 'user'}, {'type': 'user'}])
    s2 = spec(nics=[{'type': 'user'}, {'type': 'user'}])
    macs = [n['mac'] for n in s1['nics']]
    assert macs == [n['mac'] for n in s2['nics']]
    assert macs[0] != macs[1]
    assert all(m.startswith('52:54:00:') for m in macs)
    assert generated_mac('web', 0) != generated_mac('db', 0)


def test_given_mac_is_normalised():
    s = spec(nics=[{'mac': '52-54-00-AB-CD-EF'}])
    assert s['nics'][0]['mac'] == '52:54:00:ab:cd:ef'


def test_ipv6_vnc_address_is_canonical():
    assert spec(vnc_bind_address='::0001')['vnc_bind_address'] == '::1'


def test_uuid_is_canonical():
    assert spec(uuid='6F9619FF-8B86-D011-B42D-00C04FC964FF')['uuid'] == '6f9619ff-8b86-d011-b42d-00c04fc964ff'


def test_missing_files_are_refused(tmp_path):
    disk = tmp_path / 'a.img'
    s = spec(disks=[{'path': str(disk)}])
    with pytest.raises(ValidationError, match='does not exist'):
        check_host_files(s)
    disk.write_bytes(b'\0' * 512)
    check_host_files(s)
    s = spec(kernel=str(tmp_path / 'vmlinuz'), root='/dev/vda')
    with pytest.raises(ValidationError, match='kernel .* does not exist'):
        check_host_files(s)


def test_shared_disks_only_clash_when_someone_writes():
    a = spec(disks=[{'path': '/srv/a.img'}, {'path': '/srv/iso', 'readonly': True}])
    b = normalize_spec('db', {'disks': [{'path': '/srv/iso', 'readonly': True}]})
    c = normalize_spec('db', {'disks': [{'path': '/srv/a.img', 'readonly': True}]})
    assert shared_disks(a, b) == []
    assert shared_disks(a, c) == ['/srv/a.img']


# -- hostile input: wrong types, option syntax, trailing newlines (issue 10) -----------------
@pytest.mark.parametrize('params, words', [
    ({'disks': 5}, 'disks must be a list'),
    ({'disks': ['/a.img']}, 'disks must be a list of dictionaries'),
    ({'nics': {'type': 'user'}}, 'nics must be a list'),
    ({'nics': [{'mac': 5}]}, 'MAC'),
    ({'nics': [{'type': 'bridge', 'bridge': 5}]}, 'bridge name'),
    ({'nics': [{'type': 'bridge', 'bridge': 'br0\n'}]}, 'bridge name'),
    ({'nics': [{'mac': '52:54:00:12:34:56\nx'}]}, 'MAC'),
    ({'disks': [{'path': '/a.img', 'readonly': 'yes'}]}, 'readonly'),
    ({'acpi': 'no'}, 'acpi'),
    ({'memory': '512'}, 'memory'),
    ({'memory': 1000000000000}, 'memory'),
    ({'vcpus': 100000}, 'vcpus'),
    ({'machine': 'pc,accel=kvm'}, 'machine'),
    ({'machine': 'pc\n'}, 'machine'),
    ({'cpu_model': 'qemu64\n-S'}, 'cpu_model'),
    ({'root': 5, 'kernel': '/boot/vmlinuz'}, 'root'),
    ({'kernel_args': ['a'], 'kernel': '/boot/vmlinuz', 'root': '/dev/vda'}, 'kernel_args'),
    ({'vnc_bind_address': '::1%x,vnc=[0.0.0.0'}, 'scope id'),
    ({'vnc_bind_address': 'fe80::1%eth0'}, 'scope id'),
    ({'vnc_bind_address': 5}, 'VNC bind address'),
    ({'extra_args': ['-incoming', 'exec:touch /tmp/x']}, 'extra_args'),
    ({'extra_args': ['-qmp', 'tcp:0.0.0.0:4444,server=on']}, 'extra_args'),
    ({'extra_args': 'x'}, 'extra_args'),
    ({'qemu_binary': '/bin/sh'}, 'qemu_binary'),
    ({'qemu_binary': '/usr/bin/qemu-system-'}, 'qemu_binary'),
    ({'qemu_binary': 5}, 'qemu_binary'),
])
def test_hostile_values_are_refused_with_a_clear_message(params, words):
    with pytest.raises(ValidationError) as err:
        spec(**params)
    assert words in str(err.value)


def test_qemu_binaries_the_identity_check_knows_are_taken():
    for binary in ('/usr/bin/qemu-system-x86_64', 'qemu-system-aarch64', '/usr/bin/kvm', 'qemu-kvm'):
        assert spec(qemu_binary=binary)['qemu_binary'] == binary


def test_a_cpu_model_with_feature_flags_is_taken():
    assert spec(cpu_model='qemu64,+ssse3,-svm')['cpu_model'] == 'qemu64,+ssse3,-svm'
