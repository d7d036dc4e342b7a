# dmvpn-lab: the lifecycle in four targets. Every target works on a normal Linux host and, where the
# kernel lacks GRE/ESP, through the sandbox kernel (User-Mode Linux) without anything else to type.
PYTHON ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
TOPOLOGY ?= topologies/dmvpn-gdoi
RUNTIME ?=
LAB = $(PYTHON) -m dmvpn_lab.lab.cli -t $(TOPOLOGY) $(if $(RUNTIME),--runtime $(RUNTIME))

.PHONY: setup images lab-up lab-down status validate test unit lint bench topologies purge

setup:            ## install system packages and the Python package (Debian/Ubuntu, as root)
	./scripts/setup.sh

images:           ## build the containerlab runtime's images (dmvpn-lab/router, dmvpn-lab/ks)
	$(PYTHON) -m dmvpn_lab.lab.images

lab-up:           ## bring the seed's lab up and show it working (RUNTIME=containerlab for Docker)
	$(LAB) up
	$(LAB) status
	$(LAB) exec host4 -- ping -n -c 5 -i 0.5 -W 2 192.168.2.10

lab-down:         ## remove everything the lab made
	$(LAB) down

status:
	$(LAB) status

validate:
	$(LAB) validate

test:             ## unit tests and the lab suites (in the sandbox kernel where needed)
	$(PYTHON) -m pytest

unit:             ## unit tests only, no lab
	$(PYTHON) -m pytest tests -m "not lab"

lint:
	$(PYTHON) -m ruff check src tests labtests bench conftest.py
	$(PYTHON) -m mypy src

bench:            ## GDOI engine benchmark and the GDOI-vs-IKEv2 side-by-side (labs in the sandbox kernel where needed)
	$(PYTHON) bench/gdoi_bench.py
	$(PYTHON) bench/lab_footprint.py
	$(PYTHON) bench/side_by_side.py

topologies:       ## regenerate the topology folders from src/dmvpn_lab/lab/generate.py
	$(PYTHON) -m dmvpn_lab.lab.generate --protection gdoi
	$(PYTHON) -m dmvpn_lab.lab.generate --protection plain
	$(PYTHON) -m dmvpn_lab.lab.generate --protection ipsec

purge:            ## stop every lab and sandbox, remove all the project put on this host and .venv (apt packages stay)
	./scripts/purge.sh
