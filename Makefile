# dockmoat: make setup | make run | make test | make lint | make bench
# See ../shared/PRODUCT.md and README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := .venv
TOOLS      := .cache/tools
UV         := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
PYTHON     ?= python3
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help setup system-deps run test test-unit test-matrix test-matrix-run lint bench soak clean \
	engine-up engine-down \
	image base-image image-requirements install-systemd

help:
	@echo "make setup   install what is missing (.venv, a Docker engine when root)"
	@echo "make run     setup, then serve the guarded socket in the foreground"
	@echo "make test    setup, start/reuse a real engine, lint, type-check, run the whole suite"
	@echo "             and the engine matrix (MATRIX=0 leaves the matrix out)"
	@echo "make test-matrix   the differential, policy and tenancy tests on the nested engines"
	@echo "make lint    ruff + mypy (strict, src and bench)"
	@echo "make bench   the benchmarks in bench/"
	@echo "make soak    the soak suite: load and faults (SOAK_ARGS for its scale; docs/soak.md)"
	@echo "make image   build the dockmoat image (dockmoat/dockmoat:VERSION) with the local engine"
	@echo "make install-systemd   install dockmoat in /opt/dockmoat and its systemd units (root)"

# System packages come first: on a bare Debian `python3 -m venv` needs python3-venv.
system-deps:
	@scripts/install-engine

$(UV): | system-deps
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The stamp makes `make setup` silent when the lock has not changed. Bytecode is
# compiled at install: every `dockmoat` call (e.g. a warm-pool `dind up`) starts faster.
$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	@$(UV) sync --locked --quiet --compile-bytecode --python $(PYTHON)
	@touch $@

setup: system-deps $(VENV)/.synced

run: setup
	@scripts/test-engine up --quiet-reuse --engine-only
	@$(VENV)/bin/dockmoat serve

lint: setup
	@$(VENV)/bin/ruff check src tests bench
	@$(VENV)/bin/ruff format --check src tests bench
	@$(VENV)/bin/mypy
	@$(VENV)/bin/mypy bench

test-unit: setup
	@$(VENV)/bin/pytest -m "not engine" -q

# The engine is started only if none answered; `down` stops only what `up` started
# (and removes the matrix's nested engines). A failing matrix run fails `make test`.
MATRIX ?= 1
test: setup
	@$(MAKE) --no-print-directory lint
	@scripts/test-engine up
	@status=0; $(VENV)/bin/pytest -q $(PYTEST_ARGS) || status=$$?; \
	  if [ "$(MATRIX)" != 0 ]; then \
	    $(MAKE) --no-print-directory test-matrix-run || { [ $$status != 0 ] || status=1; }; \
	  fi; \
	  scripts/test-engine down; exit $$status

# The engine matrix (docs/testing.md): the host engine runs them in the main pytest
# run; here they run again against each nested engine (20.10, 26.1), tests that need
# the host's mount namespace deselected (-m "not host_namespaces").
MATRIX_TESTS := tests/engine/gateway/test_routing_differential.py tests/engine/policy \
	tests/engine/tenancy
test-matrix: setup
	@scripts/test-engine up --quiet-reuse
	@status=0; $(MAKE) --no-print-directory test-matrix-run || status=$$?; \
	  scripts/test-engine matrix-down; exit $$status

test-matrix-run:
	@scripts/test-engine matrix-up
	@status=0; hosts=$$(scripts/test-engine matrix-hosts | tr ' ' '=') || exit 1; \
	  for entry in $$hosts; do \
	    version=$${entry%%=*}; host=$${entry#*=}; start=$$(date +%s); \
	    echo "== engine matrix: $$version at $$host"; \
	    DOCKER_HOST=$$host $(VENV)/bin/pytest -q -p no:cacheprovider -m "not host_namespaces" \
	      $(MATRIX_TESTS) $(MATRIX_ARGS) </dev/null || status=1; \
	    echo "== engine matrix: $$version took $$(( $$(date +%s) - start )) s"; \
	  done; exit $$status

# HAProxy is the gateway benchmark's named baseline; installed only for `make bench`.
bench: setup
	@command -v haproxy >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; } || \
	  echo "make bench: haproxy is missing; its column is left out"
	@scripts/test-engine up
	@$(VENV)/bin/python -m bench

# The soak suite (docs/soak.md): load and faults, bounded in time; not part of `make
# test` or `make bench`. SOAK_ARGS for its options, e.g. the full size:
#   make soak SOAK_ARGS="--jobs 100 --duration 600 --idle 1000 --streams 50 --connect-drop 10000"
SOAK_ARGS ?=
soak: setup
	@scripts/test-engine up --quiet-reuse
	@$(VENV)/bin/python -m bench.soak $(SOAK_ARGS)

# The image (docs/deploy.md): the base image is made by debootstrap when missing, the
# locked wheels are fetched here, the build itself is offline. Cached by input digest.
image: $(UV)
	@PIP=$(TOOLS)/bin/pip scripts/build-image $(IMAGE_ARGS)

base-image:
	@scripts/base-image

# deploy/image/requirements.txt is uv.lock's export (with hashes); redo after `uv lock`.
image-requirements: $(UV)
	@$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt --quiet \
	  > deploy/image/requirements.txt

# The host service (docs/deploy.md): dockmoat in /opt/dockmoat, units in /etc/systemd/system.
# INSTALL_ARGS: --unprivileged, --prefix DIR, --no-start, --pool-size N.
install-systemd:
	@scripts/install-systemd $(INSTALL_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
