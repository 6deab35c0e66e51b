"""Unit tests import hvops.kvm as ansible_collections.hvops.kvm, through the
link tools/setup.sh makes in build/collections (pytest.ini puts that
directory on sys.path)."""
import os

from tests.harness import COLLECTIONS

if not os.path.isdir(os.path.join(COLLECTIONS, 'ansible_collections', 'hvops', 'kvm')):
    raise RuntimeError('%s/ansible_collections/hvops/kvm is missing; run tools/setup.sh' % COLLECTIONS)


import pytest  # noqa: E402

from ansible_collections.hvops.kvm.plugins.module_utils import _layout  # noqa: E402


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    """A layout made without a state_dir gets one under the test's tmp_path,
    never the machine's /var/lib/hvops-kvm."""
    state_dir = str(tmp_path / 'default-state')
    monkeypatch.setattr(_layout, 'DEFAULT_STATE_DIR', state_dir)
    return state_dir
