# Entry points; every target prepares the machine first (scripts/setup.sh is quick when nothing is missing).
SHELL := /bin/bash
PYTEST := .venv/bin/pytest

.PHONY: setup test unit integration demo sandbox site sandbox-absent

setup:
	scripts/setup.sh

# Unit and integration tests (integration needs root: it starts real etcd, Docker engines, namespaces).
test: setup
	$(PYTEST) agent/tests -ra

unit: setup
	$(PYTEST) agent/tests/unit -ra

integration: setup
	$(PYTEST) agent/tests -m integration -ra

# Sandbox nodes (containers with systemd and their own engine) on this machine, then the cluster on them.
ANSIBLE_PLAYBOOK := .venv/bin/ansible-playbook

# The cluster on sandbox nodes, then the services of a Swarm talk on it; `make sandbox-absent` removes it all.
demo: site
	$(ANSIBLE_PLAYBOOK) -i inventories/sandbox playbooks/demo.yml

sandbox: setup
	$(ANSIBLE_PLAYBOOK) playbooks/sandbox.yml

site: sandbox
	$(ANSIBLE_PLAYBOOK) -i inventories/sandbox playbooks/site.yml

sandbox-absent: setup
	$(ANSIBLE_PLAYBOOK) playbooks/sandbox.yml -e state=absent
