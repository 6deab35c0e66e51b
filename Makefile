# hvops.kvm developer entry points. Every target installs what it needs first.
SHELL := /bin/bash
VENV := .venv/bin
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections
export ANSIBLE_FORCE_COLOR := 0
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup test sanity units integration lint demo bench guest clean

setup:
	@tools/setup.sh

# The whole pipeline, stopping at the first failure.
test: setup
	@$(MAKE) --no-print-directory sanity units integration lint

sanity: setup
	tools/sanity.sh

units: setup
	$(VENV)/python -m pytest -q tests/unit

integration: setup
	$(VENV)/python -m pytest -q tests/integration

lint: setup
	$(VENV)/ansible-lint --profile production --offline

demo: setup
	$(VENV)/ansible-playbook -i playbooks/inventory/local.yml playbooks/demo.yml

bench: setup
	$(VENV)/python -m bench

clean:
	rm -rf build .pytest_cache
