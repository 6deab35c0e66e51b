import json
import os
import subprocess

from ansible_collections.hvops.kvm.plugins.module_utils._image_use import image_users
from ansible_collections.hvops.kvm.plugins.module_utils._layout import NodeLayout


def real_run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


def define(layout, name, *disks):
    layout.ensure()
    with open(layout.paths(name).definition, 'w') as handle:
        json.dump({'name': name, 'disks': list(disks)}, handle)


def test_users_by_real_path_and_through_backing_chains(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    base = str(images / 'base.raw')
    top = str(images / 'top.qcow2')
    other = str(images / 'other.raw')
    real_run(['qemu-img', 'create', '-q', '-f', 'raw', base, '1M'])
    real_run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', top])
    real_run(['qemu-img', 'create', '-q', '-f', 'raw', other, '1M'])
    os.symlink(top, str(images / 'link.qcow2'))
    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    define(layout, 'web', {'path': other, 'format': 'raw'},
           {'path': str(images / 'link.qcow2'), 'format': 'qcow2', 'readonly': False})
    define(layout, 'db', {'path': str(images / '..' / 'images' / 'other.raw'), 'format': 'raw', 'readonly': True})

    assert image_users(layout, top, real_run) == [
        {'instance': 'web', 'disk': 1, 'drive': 'disk1', 'readonly': False, 'running': False, 'backing_of': None}]
    assert image_users(layout, other, real_run) == [
        {'instance': 'db', 'disk': 0, 'drive': 'disk0', 'readonly': True, 'running': False, 'backing_of': None},
        {'instance': 'web', 'disk': 0, 'drive': 'disk0', 'readonly': False, 'running': False, 'backing_of': None}]
    assert image_users(layout, base, real_run) == [
        {'instance': 'web', 'disk': 1, 'drive': 'disk1', 'readonly': True, 'running': False,
         'backing_of': str(images / 'link.qcow2')}]
    assert image_users(layout, base, real_run, backing=False) == []
    assert image_users(layout, str(images / 'unused.raw'), real_run) == []


def test_no_instances_no_users(tmp_path):
    layout = NodeLayout(str(tmp_path / 'run'), str(tmp_path / 'state'))
    assert image_users(layout, '/srv/a.raw', real_run) == []
