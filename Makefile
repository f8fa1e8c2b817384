# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Both set up everything first, on a fresh Debian 12 machine too: system packages (as root,
# or through sudo), the virtualenv, the project's own services and the schema.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := edge,obd,server,dev
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system venv node services migrate demo test lint clean services-down

setup: system venv node services migrate

system:
	@$(SUDO) bash deploy/install/system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

# Leaflet for the dispatcher map (served by the API, no CDN) and Azurite for the archive tests.
NODE_STAMPS := api/web/node_modules/.installed api/jobs/azurite/node_modules/.installed

node: $(NODE_STAMPS)

%/node_modules/.installed: %/package-lock.json
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	@touch $@

services: venv
	$(BIN)/fleet services up

migrate: services
	$(BIN)/fleet db migrate

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest

demo: setup
	$(BIN)/fleet demo $(DEMO_ARGS)

services-down:
	$(BIN)/fleet services down

clean: services-down
	rm -rf .fleet $(VENV)
