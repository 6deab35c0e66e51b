"""hvops.kvm benchmarks: ``python -m bench [name ...] [--quick]`` (``make bench``),
run from the checkout's top directory, where the test harness (tests.harness)
is imported from.

Measurements, not tests: nothing fails because the machine is slow. Each
benchmark prints its tables and writes them to bench/results/ (markdown, JSON
and a PNG chart); ``--quick`` runs fewer sizes and rounds and writes to
build/bench/ instead, leaving the committed results alone.
"""
import sys

from tests.harness import COLLECTIONS

# hvops.kvm is imported as ansible_collections.hvops.kvm, through the link
# `make setup` puts in build/collections (pytest.ini does the same for the tests).
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
