# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Both set up everything first, on a fresh Debian 12 machine too: system packages (as root,
# or through sudo), the virtualenv, the project's own services and the schema.
#
# Python dependencies come only from the hash-checked locks in requirements/ (one per install
# profile: gateway, server, dev); `make lock` is the only way their versions change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LOCK   := requirements/dev.txt
# The virtualenv is rebuilt from nothing whenever the lock changes, so it holds exactly the
# lock (a package dropped from the lock leaves too); the project itself is installed editable
# on top, again whenever pyproject.toml changes (entry points, package data). The stamps are
# named by content, not compared by date: rewriting an unchanged lock rebuilds nothing.
LOCK_STAMP     := $(VENV)/.lock-$(shell sha1sum $(LOCK) 2>/dev/null | cut -c1-12)
EDITABLE_STAMP := $(VENV)/.editable-$(shell cat pyproject.toml $(LOCK) 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: setup system venv node services migrate demo test test-apache test-apache-full lint clean \
        services-down lock outdated dist check-pi

setup: system venv node services migrate

# The TimescaleDB source tarball and its sha256 (deploy/install/timescaledb.sh has the defaults);
# passed explicitly because sudo drops the environment.
system:
	@$(SUDO) env FLEET_TIMESCALEDB_SOURCE='$(FLEET_TIMESCALEDB_SOURCE)' \
	  FLEET_TIMESCALEDB_SHA256='$(FLEET_TIMESCALEDB_SHA256)' bash deploy/install/system-deps.sh

venv: $(EDITABLE_STAMP)

$(LOCK_STAMP):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	@rm -f $(VENV)/.lock-* && touch $@

$(EDITABLE_STAMP): | $(LOCK_STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@rm -f $(VENV)/.editable-* && touch $@

# Re-resolve the locks from pyproject.toml and requirements/tools.in (deploy/install/lock.sh).
# Pins already in the locks are kept where they still fit; UPGRADE=1 takes the newest releases
# of everything, UPGRADE="aiohttp redis" of the named packages only.
UPGRADE_FLAGS := $(if $(filter 1 all,$(UPGRADE)),--upgrade,$(addprefix --upgrade-package ,$(UPGRADE)))

lock: $(LOCK_STAMP)
	UV=$(BIN)/uv deploy/install/lock.sh requirements $(UPGRADE_FLAGS)

# Checks, without a Raspberry Pi, that the gateway lock installs on one (docs/gateway.md).
check-pi: $(LOCK_STAMP)
	UV=$(BIN)/uv $(BIN)/python deploy/install/check_pi.py

# What is behind: every locked package with a newer release (`make lock UPGRADE=...` takes it).
outdated: venv
	$(BIN)/pip list --outdated --exclude-editable

# The wheel: carries migrations, DBC files and the dispatcher map with Leaflet (`make dist`
# first installs the npm lock, whose files the wheel packs).
dist: venv node
	rm -rf dist build *.egg-info/SOURCES.txt
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w dist .
	@ls dist/*.whl

# The dispatcher console (TypeScript bundled with Leaflet by esbuild, served by the API, no CDN)
# and Azurite for the archive tests, both from their npm locks.
NODE_STAMPS := api/web/node_modules/.installed api/jobs/azurite/node_modules/.installed
CONSOLE     := api/web/dist/console.js

node: $(NODE_STAMPS) $(CONSOLE)

%/node_modules/.installed: %/package-lock.json
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	@touch $@

$(CONSOLE): api/web/node_modules/.installed api/web/build.mjs $(wildcard api/web/src/*)
	npm run --prefix api/web --silent build

services: venv
	$(BIN)/fleet services up

migrate: services
	$(BIN)/fleet db migrate

lint: venv node
	$(BIN)/ruff check .
	$(BIN)/mypy
	npm run --prefix api/web --silent check

# The whole suite on the Timescale-licence edition (the default, what Timescale's packages
# and images run), then the edition-dependent tests (marked `editions`: schema, tenancy,
# rollups, compression, sink, jobs) again on the Apache edition: the project's PostgreSQL
# restarts with the other licence for them and with the default again afterwards.
test: setup lint
	npm test --prefix api/web --silent
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-apache

test-apache: venv
	FLEET_SERVICES_TIMESCALEDB_LICENSE=apache $(BIN)/pytest -m editions; \
	  rc=$$?; $(BIN)/fleet services up >/dev/null; exit $$rc

# The whole suite on the Apache edition (before a release, or after a schema change).
test-apache-full: setup
	FLEET_SERVICES_TIMESCALEDB_LICENSE=apache $(BIN)/pytest; \
	  rc=$$?; $(BIN)/fleet services up >/dev/null; exit $$rc

demo: setup
	$(BIN)/fleet demo $(DEMO_ARGS)

services-down:
	$(BIN)/fleet services down

clean: services-down
	rm -rf .fleet $(VENV)
