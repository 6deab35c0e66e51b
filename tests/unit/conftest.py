"""Unit tests import hvops.kvm as ansible_collections.hvops.kvm, through the
link tools/setup.sh makes in build/collections (pytest.ini's pythonpath does
the same when pytest starts from the checkout; this covers other rootdirs)."""
import os
import sys

COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           'build', 'collections')

if not os.path.isdir(os.path.join(COLLECTIONS, 'ansible_collections', 'hvops', 'kvm')):
    raise RuntimeError('%s/ansible_collections/hvops/kvm is missing; run tools/setup.sh' % COLLECTIONS)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
