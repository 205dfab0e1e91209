# The two commands of the README:
#   make demo   set everything up and run the local demo fleet
#   make test   run the whole test suite (unit + real API server)
# Both install what they need into .venv and ~/.cache/visionfleet (Go binaries); nothing by hand.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: demo test unit binaries prometheus crd check-crd down clean venv

$(STAMP): pyproject.toml
	@echo "==> Creating $(VENV) and installing VisionFleet with its test dependencies"
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

binaries:
	@echo "==> Building (or reusing) the pinned Kubernetes, etcd, kwok and helm binaries"
	e2e/cluster/build-binaries.sh

demo: $(STAMP) binaries
	$(VENV)/bin/visionfleet-fleet demo

prometheus:
	e2e/prometheus/ensure-prometheus.sh

test: $(STAMP) binaries prometheus
	$(VENV)/bin/pytest

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

crd: $(STAMP)
	$(VENV)/bin/visionfleet-crd

check-crd: $(STAMP)
	$(VENV)/bin/visionfleet-crd --check

down: $(STAMP)
	$(VENV)/bin/visionfleet-fleet down

clean: down
	rm -rf $(VENV) .fleet
