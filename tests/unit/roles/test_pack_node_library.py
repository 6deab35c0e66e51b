"""roles/kvm_node/files/pack_node_library.py: the node library as one zip."""
import importlib.util
import os
import subprocess
import sys
import zipfile

import pytest

from tests.harness import REPO

SCRIPT = os.path.join(REPO, 'roles', 'kvm_node', 'files', 'pack_node_library.py')
MODULE_UTILS = os.path.join(REPO, 'plugins', 'module_utils')


def load():
    spec = importlib.util.spec_from_file_location('pack_node_library', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_sources_give_the_same_bytes_and_every_file_is_in(tmp_path):
    pack = load().pack
    first, second = str(tmp_path / 'a.zip'), str(tmp_path / 'b.zip')
    pack(first, MODULE_UTILS)
    os.utime(os.path.join(MODULE_UTILS, '_errors.py'))
    pack(second, MODULE_UTILS)
    with open(first, 'rb') as one, open(second, 'rb') as two:
        assert one.read() == two.read(), 'a new mtime changed the zip'
    with zipfile.ZipFile(first) as packed:
        names = [name for name in packed.namelist() if not name.endswith('/')]
        assert names == ['ansible_collections/hvops/kvm/plugins/module_utils/' + name
                         for name in sorted(os.listdir(MODULE_UTILS)) if name.endswith('.py')]
        with open(os.path.join(MODULE_UTILS, '_errors.py'), 'rb') as handle:
            assert packed.read('ansible_collections/hvops/kvm/plugins/module_utils/_errors.py') == handle.read()


def test_python_imports_the_unit_from_the_zip_alone(tmp_path):
    out = str(tmp_path / 'lib.zip')
    done = subprocess.run([sys.executable, SCRIPT, out, MODULE_UTILS], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    ran = subprocess.run([sys.executable, '-c', 'import ansible_collections.hvops.kvm.plugins.module_utils'
                          '._node_service as m; print(m.__file__)'], env={'PYTHONPATH': out},
                         cwd=str(tmp_path), capture_output=True, text=True, check=False)
    assert ran.returncode == 0 and ran.stdout.startswith(out + os.sep), ran.stdout + ran.stderr


def test_another_directory_is_refused(tmp_path):
    (tmp_path / 'x.py').write_text('')
    with pytest.raises(SystemExit, match='does not look like'):
        load().pack(str(tmp_path / 'out.zip'), str(tmp_path))
