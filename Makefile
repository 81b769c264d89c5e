# prtip_nb: `make demo` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.installed-core
STAMP := $(VENV)/.installed
# Debian packages the tests use as oracles and lab tools (installed only when root).
# chromium (Debian's; Playwright drives it) is for tests/browser.
# The daemons (nginx ... dnsmasq) are for tests/probes/test_real_daemons.py, which starts
# them itself inside its private namespace; the install must not start them (see below).
APT_PACKAGES ?= nmap ndiff iproute2 nftables util-linux strace \
	nginx openssh-server redis-server exim4-daemon-light vsftpd dnsmasq memcached rsync dovecot-imapd \
	chromium

.PHONY: demo test lint system-deps bench clean help

help:
	@echo "make demo   - install, start the built-in lab, scan it, write data/scans + data/report.html"
	@echo "make test   - install (venv + Debian packages when root), lint, run the whole suite"
	@echo "             (TEST_WORKERS=4 parallel workers, then the serial tests; docs/testing.md)"
	@echo "make bench  - benchmarks against nmap, in a private network namespace"

# The demo needs only the core dependencies (plotly included: its report has charts);
# the tests need the [dev,nb] extras too.
$(CORE_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,nb]"
	@touch $(STAMP)

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install:$$missing"; \
	    rc=/usr/sbin/policy-rc.d; own=""; \
	    if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc; chmod 755 $$rc; own=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    status=$$?; [ -z "$$own" ] || rm -f $$rc; [ $$status = 0 ]; \
	  fi; \
	else echo "not root: skipping Debian packages ($(APT_PACKAGES)); tests that need them skip"; fi

demo: $(CORE_STAMP)
	$(VENV)/bin/prtip-nb demo

lint: $(STAMP)
	$(VENV)/bin/ruff check prtip_nb tests benchmarks
	$(VENV)/bin/mypy prtip_nb
	$(VENV)/bin/lint-imports

# The suite runs inside a private network namespace (scripts/in-netns): every packet the
# tests send stays on a loopback that nothing else shares. Two passes (docs/testing.md):
# the bulk on TEST_WORKERS pytest-xdist workers, each in a namespace of its own
# (tests/conftest.py), then the @pytest.mark.serial tests (timing, throughput, memory)
# alone. Both always run; the target fails if either does.
TEST_WORKERS ?= 4
test: $(STAMP) system-deps lint
	@status=0; \
	echo "== pass 1/2: parallel, $(TEST_WORKERS) workers (-m 'not serial')"; \
	scripts/in-netns $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not serial" \
	  --durations=10 $(PYTEST_ARGS) || status=$$?; \
	echo "== pass 2/2: serial (-m serial)"; \
	scripts/in-netns $(PY) -m pytest -q -m serial --durations=10 $(PYTEST_ARGS) \
	  || { rc=$$?; [ $$rc = 5 ] || status=$$rc; }; \
	exit $$status

bench: $(STAMP) system-deps
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
