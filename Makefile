# Virtual Visits: `make demo` runs the app with the sandbox EHR; `make test` runs every test.
# Both start from a clean clone: they create .venv and install what they need.

PYTHON ?= python3
PORT ?= 5000
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)

.PHONY: messages demo test stack-test bench nodejs install install-test translations migrate chromium webkit coturn redis-server nginx serve clean help

help:
	@echo "make demo   - set up and start the app with the sandbox EHR on http://127.0.0.1:$(PORT)"
	@echo "make test   - install test dependencies (and Debian chromium, WebKitGTK, coturn) and run the whole suite"
	@echo "make stack-test - nginx, 2 gunicorn workers, PostgreSQL, Redis, coturn on loopback, driven by Chromium"
	@echo "make bench  - the app against the Node socket.io reference, side by side (several minutes)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed translations
install-test: $(VENV)/.installed-test translations chromium webkit coturn redis-server nginx

translations: $(VENV)/.installed
	@$(BIN)/pybabel -q compile -d translations

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian chromium for the browser tests..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

# The second engine: tests/browser/test_webkit.py drives Debian's WebKitGTK (Safari's engine)
# through WebKitWebDriver on an Xvfb screen of its own.
webkit:
	@if [ ! -x /usr/bin/WebKitWebDriver ] || [ ! -x /usr/bin/Xvfb ]; then \
	  echo "Installing Debian webkit2gtk-driver and xvfb for the WebKit browser test..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq webkit2gtk-driver xvfb >/dev/null; \
	fi

# The device test's browser tests start their own coturn (TURN relay) on loopback ports.
coturn:
	@if [ ! -x /usr/bin/turnserver ]; then \
	  echo "Installing Debian coturn for the device-test browser tests..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq coturn >/dev/null; \
	fi

# The Redis outage tests start, stop and restart a private redis-server of their own.
redis-server:
	@if ! command -v redis-server >/dev/null; then \
	  echo "Installing Debian redis-server for the Redis outage tests..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; \
	fi

# The stack test (tests/stack/) runs deploy/nginx/ in front of gunicorn; nginx is started
# by the test on loopback ports, never as the system service.
nginx:
	@if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then \
	  echo "Installing Debian nginx for the stack test..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light >/dev/null; \
	fi

# The load driver and the Node socket.io reference need Node.js 20+ and npm.
nodejs:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "Installing Debian nodejs and npm for the benchmark driver..."; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; \
	fi

migrate: install
	VV_SANDBOX=1 $(BIN)/flask --app app db upgrade

# The first sandbox visit starts now, so its waiting room is open whatever the hour.
DEMO_ENV := VV_SANDBOX=1 VV_SANDBOX_FIRST_VISIT=now VV_PUBLIC_BASE_URL=http://127.0.0.1:$(PORT)
demo: migrate
	$(DEMO_ENV) $(BIN)/flask --app app demo
	$(DEMO_ENV) VV_PORT=$(PORT) VV_LOG_FORMAT=text $(BIN)/python app.py

# Three workers (pytest-xdist), a test file each: a browser test mostly waits on the browser
# and the server, so three share this 2-core machine; measured here on a quiet machine, the
# whole suite took 9 min 20 s on three (four were no faster: the CPU is then the limit).
PYTEST_ARGS ?= -n 3 --dist loadfile

test: install-test nodejs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The production shape on loopback (tests/stack/, also part of `make test`): nginx with
# TLS, 2 gunicorn workers, a PostgreSQL database it creates and drops in the server at
# DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test), a private Redis,
# coturn; then Chromium over https. About two minutes.
stack-test: install-test
	$(BIN)/python -m pytest tests/stack $(STACK_TEST_ARGS)

# `make bench BENCH_ARGS="--pairs 1000 --variants node,sqlite"`; see bench/run.py --help.
bench: install nodejs
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) test-output .pytest_cache

# For developers: refresh translations/messages.pot and the .po files after changing text.
SOURCES := app.py ops visits patient_join provider_launch staff_sso device_test ehr notifications admin sandbox_ehr templates
messages: $(BIN)/python
	$(BIN)/pybabel extract -F babel.cfg -k _l --no-location --sort-output -o translations/messages.pot $(SOURCES)
	$(BIN)/pybabel update --no-fuzzy-matching -i translations/messages.pot -d translations
