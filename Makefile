# Entry points; every target prepares the machine first (scripts/setup.sh is quick when nothing is missing).
SHELL := /bin/bash
PYTEST := .venv/bin/pytest

.PHONY: setup test unit integration demo

setup:
	scripts/setup.sh

# Unit and integration tests (integration needs root: it starts real etcd, Docker engines, namespaces).
test: setup
	$(PYTEST) agent/tests -ra

unit: setup
	$(PYTEST) agent/tests/unit -ra

integration: setup
	$(PYTEST) agent/tests -m integration -ra

demo: setup
	scripts/demo.sh
