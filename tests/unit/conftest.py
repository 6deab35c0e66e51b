"""Unit tests import hvops.kvm as ansible_collections.hvops.kvm, through the
link tools/setup.sh makes in build/collections (pytest.ini puts that
directory on sys.path)."""
import os

from tests.harness import COLLECTIONS

if not os.path.isdir(os.path.join(COLLECTIONS, 'ansible_collections', 'hvops', 'kvm')):
    raise RuntimeError('%s/ansible_collections/hvops/kvm is missing; run tools/setup.sh' % COLLECTIONS)
