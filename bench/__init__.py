"""hvops.kvm benchmarks: ``python -m bench [name ...] [--quick]`` (``make bench``).

Measurements, not tests: nothing fails because the machine is slow. Each
benchmark prints its tables and writes them to bench/results/ (markdown, JSON
and a PNG chart); ``--quick`` runs fewer sizes and rounds and writes to
build/bench/ instead, leaving the committed results alone.
"""
