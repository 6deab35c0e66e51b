"""kvm_disk through real ansible-playbook runs, real qemu-img, and for the
live grow real QEMU (the Linux test guest, TCG) started by kvm_instance.

Each step is one playbook: the task in check mode, an info task (check mode
touched nothing), the task for real, and the task again (idempotent), all
with --diff; so a step costs one ansible-playbook run."""
import json
import os
import subprocess

import pytest

from tests.harness.ansible_run import run_playbook, write_playbook
from tests.harness.linux_guest import build_linux_guest
from tests.harness.qemu_procs import SerialRecorder
from tests.harness.system import qemu_user_ids, require_binary

MODULE = 'hvops.kvm.kvm_disk'
INFO = 'hvops.kvm.kvm_disk_info'
INSTANCE = 'hvops.kvm.kvm_instance'
MIB = 1 << 20
BOOT_TIMEOUT = 40.0


@pytest.fixture(scope='module', autouse=True)
def tools():
    for program in ('qemu-img', 'qemu-system-x86_64', 'socat'):
        require_binary(program)


def qemu_img_info(path):
    """What qemu-img itself says (-U: a running guest may hold the image)."""
    out = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def disk_task(node, **args):
    args = dict(args, run_dir=node.run_dir, state_dir=node.state_dir)
    if args.get('state') == 'info':
        del args['state']
        return {INFO: args}
    return {MODULE: args}


def play(node, tasks, name='play.json', check=False):
    """Run tasks (dicts) in one playbook; [(task name, result)]. Every task
    may fail (ignore_errors) so that one run tries many."""
    named = []
    for index, task in enumerate(tasks):
        task = dict(task)
        task.setdefault('name', 'task %d' % index)
        task.setdefault('ignore_errors', True)
        task.setdefault('diff', True)
        named.append(task)
    done = run_playbook(node.inventory, write_playbook(os.path.join(node.base, name), named), check=check)
    assert len(done.tasks()) == len(tasks), done
    return [result for _name, result in done.tasks()]


def step(node, **args):
    """check mode, info, real, again: the four results, after checking
    check mode changed nothing and predicted what the real run did."""
    info = disk_task(node, path=args['path'], state='info')
    task = disk_task(node, **args)
    predicted, looked, real, again = play(node, [dict(task, check_mode=True), info, task, task])
    assert not predicted.get('failed'), predicted
    assert not real.get('failed'), real
    assert predicted['changed'] is True and real['changed'] is True, (predicted, real)
    assert predicted['actions'] == real['actions'], (predicted, real)
    assert looked['changed'] is False
    assert predicted['diff']['before'] == diff_view(looked['disk']), 'check mode touched the image'
    assert predicted['diff']['after'] == real['diff']['after'], (predicted['diff'], real['diff'])
    assert again['changed'] is False and again['actions'] == [], again
    assert again['disk'] == real['disk'], (again['disk'], real['disk'])
    assert 'diff' in real and real['diff']['before'] != real['diff']['after']
    return predicted, looked, real, again


def diff_view(disk):
    if not disk['exists']:
        return {'state': 'absent'}
    backing = disk['backing_chain'][0] if disk['backing_chain'] else {'path': None, 'format': None}
    return {'state': 'present', 'format': disk['format'], 'virtual_size': disk['virtual_size'],
            'backing_file': backing['path'], 'backing_format': backing['format'],
            'owner': disk['owner'], 'group': disk['group'], 'mode': disk['mode']}


def test_every_state_check_mode_diff_and_reruns(node):
    images = image_dir(node)
    raw = os.path.join(images, 'a.raw')
    qcow = os.path.join(images, 'b.qcow2')
    converted = os.path.join(images, 'c.qcow2')
    overlay = os.path.join(images, 'd.qcow2')

    predicted, looked, real, _again = step(node, path=raw, size='1M')
    assert looked['disk']['exists'] is False and predicted['actions'] == ['create']
    assert real['disk']['format'] == 'raw' and real['disk']['virtual_size'] == MIB
    assert real['disk']['owner'] == 'hvops-qemu' and real['disk']['mode'] == '0600'
    assert real['disk']['qemu_user_can_open'] is True and real['disk']['in_use'] is False
    assert os.stat(raw).st_uid == qemu_user_ids()[0] and qemu_img_info(raw)['virtual-size'] == MIB
    assert not [name for name in os.listdir(images) if name.endswith('.tmp')], 'a temporary file was left'

    _p, _l, real, _a = step(node, path=qcow, format='qcow2', size='2MiB', cluster_size='128K',
                            preallocation='metadata', mode='0640', group='root')
    assert real['disk']['cluster_size'] == 128 * 1024 and real['disk']['virtual_size'] == 2 * MIB
    assert real['disk']['mode'] == '0640' and real['disk']['group'] == 'root'
    assert qemu_img_info(qcow)['cluster-size'] == 128 * 1024
    assert real['disk']['actual_size'] > 2 * 128 * 1024, 'metadata preallocation writes the tables'

    # Grow offline; then shrink, which needs shrink: true.
    _p, _l, real, _a = step(node, path=qcow, size=4 * MIB)
    assert real['actions'] == ['resize'] and qemu_img_info(qcow)['virtual-size'] == 4 * MIB
    assert real['diff']['before']['virtual_size'] == 2 * MIB and real['diff']['after']['virtual_size'] == 4 * MIB
    _p, _l, real, _a = step(node, path=qcow, size='3M', shrink=True)
    assert real['actions'] == ['resize'] and qemu_img_info(qcow)['virtual-size'] == 3 * MIB

    # Convert: raw into a standalone qcow2, grown past the source's size; a rerun does not convert again.
    _p, _l, real, _a = step(node, path=converted, source=raw, format='qcow2', size='2M')
    assert real['actions'] == ['convert', 'resize']
    assert real['disk']['format'] == 'qcow2' and real['disk']['virtual_size'] == 2 * MIB
    assert real['disk']['backing_chain'] == []

    # An overlay over a base: the base's size by default.
    _p, _l, real, _a = step(node, path=overlay, format='qcow2', backing_file=qcow, backing_format='qcow2')
    assert real['disk']['backing_chain'] == [{'path': qcow, 'format': 'qcow2'}]
    assert real['disk']['virtual_size'] == 3 * MIB
    assert qemu_img_info(overlay)['backing-filename'] == qcow

    # Ownership and mode of an existing image, only when given.
    _p, _l, real, _a = step(node, path=raw, owner='root', mode='0600')
    assert real['actions'] == ['set_owner'] and os.stat(raw).st_uid == 0
    assert any('cannot open' in warning for warning in real.get('warnings', [])), real

    # absent, and absent again; info of what is not there.
    _p, _l, real, _a = step(node, path=overlay, state='absent')
    assert real['actions'] == ['remove'] and not os.path.exists(overlay)
    assert real['disk']['exists'] is False and real['diff']['after'] == {'state': 'absent'}
    info = play(node, [disk_task(node, path=overlay, state='info'), disk_task(node, path=qcow, state='info')])
    assert info[0]['changed'] is False and info[0]['disk']['exists'] is False
    assert info[1]['disk']['format'] == 'qcow2' and info[1]['disk']['snapshots'] == 0


def image_dir(node):
    """A directory for images that the QEMU user can reach, apart from the playbooks."""
    path = os.path.join(node.base, 'img')
    os.mkdir(path)
    os.chmod(path, 0o711)
    return path


def test_bad_input_is_refused_and_changes_nothing(node):
    images = image_dir(node)
    raw = os.path.join(images, 'a.raw')
    qcow = os.path.join(images, 'q.qcow2')
    made = play(node, [disk_task(node, path=raw, size='1M'),
                       disk_task(node, path=qcow, size='1M', format='qcow2')])
    assert all(result['changed'] for result in made), made
    os.symlink(raw, os.path.join(images, 'link.raw'))
    os.mkdir(os.path.join(images, 'dir.raw'))
    fresh = os.path.join(images, 'new.qcow2')
    cases = [
        ({'path': 'rel.qcow2', 'size': '1M'}, 'absolute'),
        ({'path': images + '/../x.qcow2', 'size': '1M'}, '".."'),
        ({'path': images + '/x\nqcow2', 'size': '1M'}, 'control characters'),
        ({'path': fresh, 'size': '10 gigs'}, 'size must be a size'),
        ({'path': fresh, 'size': '10GB'}, 'size must be a size'),
        ({'path': fresh, 'size': '1000'}, '512-byte sectors'),
        ({'path': fresh}, 'size is required'),
        ({'path': fresh, 'format': 'qcow2', 'backing_file': images + '/none.qcow2', 'backing_format': 'qcow2'},
         'does not exist'),
        ({'path': fresh, 'format': 'qcow2', 'backing_file': 'base.qcow2', 'backing_format': 'qcow2'}, 'absolute'),
        ({'path': fresh, 'format': 'qcow2', 'backing_file': raw, 'backing_format': 'qcow2'}, 'is a raw image'),
        ({'path': fresh, 'format': 'raw', 'backing_file': qcow, 'backing_format': 'qcow2'}, 'backing file'),
        ({'path': fresh, 'backing_file': qcow, 'backing_format': 'qcow2'}, 'format qcow2'),
        ({'path': fresh, 'source': images + '/none.raw'}, 'does not exist'),
        ({'path': fresh, 'source': raw, 'size': '512K'}, 'smaller than the source'),
        ({'path': fresh, 'format': 'raw', 'size': '1M', 'preallocation': 'metadata'}, 'does not apply'),
        ({'path': fresh, 'format': 'raw', 'size': '1M', 'cluster_size': '64K'}, 'qcow2 images only'),
        ({'path': fresh, 'format': 'qcow2', 'size': '1M', 'cluster_size': '3000'}, 'power of two'),
        ({'path': fresh, 'size': '1M', 'mode': '0666'}, 'every user'),
        ({'path': fresh, 'size': '1M', 'mode': '4600'}, 'setuid'),
        ({'path': fresh, 'size': '1M', 'owner': 'no-such-user-x'}, 'not a user'),
        ({'path': images + '/nodir/x.raw', 'size': '1M'}, 'does not exist'),
        ({'path': raw, 'format': 'qcow2'}, 'never reformatted'),
        ({'path': qcow, 'size': '512K'}, 'shrink: true'),
        ({'path': qcow, 'cluster_size': '128K'}, 'cluster size'),
        ({'path': qcow, 'backing_file': raw, 'backing_format': 'raw'}, 'never rebased'),
        ({'path': os.path.join(images, 'link.raw'), 'state': 'absent'}, 'symbolic link'),
        ({'path': os.path.join(images, 'link.raw'), 'size': '2M'}, 'symbolic link'),
        ({'path': os.path.join(images, 'dir.raw'), 'size': '1M'}, 'directory'),
        ({'path': '/dev/null', 'state': 'absent'}, 'not a regular file'),
        ({'path': os.path.join(node.state_dir, 'guests', 'x.json'), 'size': '1M'}, 'state_dir'),
        ({'path': os.path.join(node.run_dir, 'x.raw'), 'size': '1M'}, 'run_dir'),
    ]
    before = snapshot(images)
    results = play(node, [disk_task(node, **args) for args, _words in cases])
    for (args, words), result in zip(cases, results):
        assert result.get('failed') is True, (args, result)
        assert words in result['msg'], (args, words, result['msg'])
        assert result.get('changed') is not True
    assert snapshot(images) == before, 'a refused task changed a file'
    assert os.path.exists('/dev/null') and not os.path.exists(fresh)


def snapshot(top):
    found = []
    for root, dirs, names in os.walk(top):
        for entry in sorted(dirs + names):
            path = os.path.join(root, entry)
            info = os.lstat(path)
            found.append((path, info.st_size, info.st_mtime_ns, info.st_mode, info.st_uid))
    return sorted(found)


def test_a_backed_qcow2_grows_while_its_guest_runs_and_used_images_stay(node):
    kernel, initrd = build_linux_guest('normal')
    base = os.path.join(node.base, 'base.raw')
    overlay = os.path.join(node.base, 'vm.qcow2')
    copy = os.path.join(node.base, 'copy.qcow2')
    made = play(node, [disk_task(node, path=base, size='8M', format='raw'),
                       disk_task(node, path=overlay, format='qcow2', backing_file=base, backing_format='raw')])
    assert [result['actions'] for result in made] == [['create'], ['create']], made
    guest = {'name': 'lg', 'run_dir': node.run_dir, 'state_dir': node.state_dir, 'memory': 128, 'accel': 'tcg',
             'machine': 'pc', 'kernel': kernel, 'initrd': initrd, 'root': '/dev/ram0',
             'disks': [{'path': overlay, 'format': 'qcow2'}]}
    console = SerialRecorder(os.path.join(node.run_dir, 'ctrl', 'lg.serial'))
    try:
        started = play(node, [{INSTANCE: dict(guest, state='started'), 'ignore_errors': False}], name='start.json')
        assert started[0]['state'] == 'running', started
        lines = console.wait_for('hvops-linux-guest ready', timeout=BOOT_TIMEOUT)
        assert not any('new size' in line for line in lines)

        grown = play(node, [
            dict(disk_task(node, path=overlay, size='16M'), check_mode=True),
            disk_task(node, path=overlay, size='16M'),
            disk_task(node, path=overlay, size='16M'),
            disk_task(node, path=overlay, state='absent'),
            disk_task(node, path=base, state='absent'),
            disk_task(node, path=overlay, size='8M', shrink=True),
            disk_task(node, path=base, size='32M'),
            disk_task(node, path=base, state='info'),
            disk_task(node, path=copy, source=overlay),
            disk_task(node, path=copy, format='qcow2', backing_file=overlay, backing_format='qcow2'),
        ], name='live.json')
        check, real, again, remove_top, remove_base, shrink, grow_base, base_info, torn, over_live = grown
        assert not check.get('failed') and not real.get('failed'), (check, real)
        assert check['actions'] == ['block_resize'] and check['changed'] is True, check
        assert real['actions'] == ['block_resize'] and real['changed'] is True, real
        assert real['disk']['virtual_size'] == 16 * MIB
        assert real['disk']['used_by'] == [{'instance': 'lg', 'disk': 0, 'drive': 'disk0', 'readonly': False,
                                            'running': True, 'backing_of': None}]
        assert real['disk']['backing_chain'] == [{'path': base, 'format': 'raw'}]
        assert again['changed'] is False and again['disk']['virtual_size'] == 16 * MIB
        assert remove_top.get('failed') and 'instance lg' in remove_top['msg'], remove_top
        assert remove_base.get('failed') and 'instance lg' in remove_base['msg'] \
            and 'backing file' in remove_base['msg'], remove_base
        assert shrink.get('failed') and 'running instance lg' in shrink['msg'], shrink
        assert grow_base.get('failed') and 'backing file' in grow_base['msg'], grow_base
        assert base_info['disk']['used_by'][0]['backing_of'] == overlay and base_info['disk']['in_use']
        assert torn.get('failed') and 'written by the running instance lg' in torn['msg'], torn
        assert over_live.get('failed') and 'used read-write by instance lg' in over_live['msg'], over_live
        assert not os.path.exists(copy)
        # The guest's kernel saw its disk grow (virtio-blk config change), from 8 to 16 MiB in 512-byte sectors.
        lines = console.wait_for('new size', timeout=10)
        assert any('[vda] new size: 32768' in line for line in lines), [x for x in lines if 'vda' in x]
        assert any('vda: detected capacity change from 16384 to 32768' in line for line in lines), lines
        assert qemu_img_info(overlay)['virtual-size'] == 16 * MIB
        assert os.path.exists(overlay) and os.path.exists(base)

        stopped = play(node, [{INSTANCE: {'name': 'lg', 'run_dir': node.run_dir, 'state_dir': node.state_dir,
                                          'state': 'stopped', 'stop_mode': 'kill'}, 'ignore_errors': False},
                              disk_task(node, path=overlay, size='24M'),
                              disk_task(node, path=overlay, state='absent')], name='stopped.json')
        assert stopped[1]['actions'] == ['resize'], stopped[1]
        assert stopped[1]['disk']['used_by'][0]['running'] is False
        assert stopped[2].get('failed') and 'instance lg' in stopped[2]['msg'], stopped[2]
        gone = play(node, [{INSTANCE: {'name': 'lg', 'run_dir': node.run_dir, 'state_dir': node.state_dir,
                                       'state': 'absent'}, 'ignore_errors': False},
                           disk_task(node, path=overlay, state='absent'),
                           disk_task(node, path=base, state='absent')], name='gone.json')
        assert [result['actions'] for result in gone[1:]] == [['remove'], ['remove']], gone
    finally:
        console.stop()
