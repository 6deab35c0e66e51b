# hvops.kvm developer entry points. Every target installs what it needs first
# (tools/setup.sh: Debian packages, the pinned .venv, the collection link).
SHELL := /bin/bash
VENV := .venv/bin
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections
export ANSIBLE_FORCE_COLOR := 0
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup test sanity units integration matrix lint build demo bench lab-up lab-down clean

# The other ansible-core lines meta/runtime.yml claims (requires_ansible), each
# in its own venv (build/venv-coreLINE, tests/requirements/core-LINE.txt);
# .venv has the newest. `make matrix` runs sanity and unit tests on each, and
# the integration subset (tests/integration/matrix.txt) on MATRIX_INTEGRATION.
MATRIX_CORES := 2.16 2.17 2.18
MATRIX_INTEGRATION := 2.16

setup:
	@tools/setup.sh

# The whole pipeline, stopping at the first failure.
test: setup
	@$(MAKE) --no-print-directory sanity units integration matrix lint build

sanity: setup
	tools/sanity.sh

units: setup
	$(VENV)/python -m pytest -q tests/unit

integration: setup
	$(VENV)/python -m pytest -q -n 2 --durations=40 --junitxml=build/integration.xml tests/integration

matrix: setup
	tools/matrix.sh --integration "$(MATRIX_INTEGRATION)" $(MATRIX_CORES)

lint: setup
	$(VENV)/ansible-lint --profile production --offline
	$(VENV)/antsibull-changelog lint

# The Galaxy artifact: built, checked, installed into a scratch path.
build: setup
	tools/build_collection.sh

# Boot the test guest on "node A", live-migrate it to "node B" and back (two
# run_dirs on this machine, over loopback), showing its tick counter going on
# and the statistics, then stop it.
demo: setup
	img=$$($(VENV)/python -m tests.harness.guest normal --out build/demo) && \
	chown hvops-qemu:hvops-qemu "$$img" && chmod 0600 "$$img" && \
	HVOPS_DEMO_IMAGE=$$img ANSIBLE_DISPLAY_SKIPPED_HOSTS=false \
	    $(VENV)/ansible-playbook -i playbooks/inventory/local.yml playbooks/demo.yml

# Benchmarks (bench/): tables and charts in bench/results/. One or some, and
# quicker: make bench BENCH='migration --quick'
bench: setup
	$(VENV)/python -m bench $(BENCH)

# The two-host lab (network namespaces hvk-a/hvk-b, one sshd each) for trying
# things by hand: ansible -i /tmp/hvk-lab/inventory.json all -m ansible.builtin.ping
lab-up: setup
	$(VENV)/python tools/lab.py up

lab-down:
	python3 tools/lab.py down

clean:
	rm -rf build .pytest_cache tests/output
