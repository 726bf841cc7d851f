# Everyday commands. `make demo` and `make test` set everything up themselves (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }
STAMP := $(VENV)/.setup-stamp
MSGS := $(wildcard fatigue_msgs/msg/*.msg fatigue_msgs/action/*.action) fatigue_msgs/CMakeLists.txt fatigue_msgs/package.xml
REQS := $(wildcard requirements*.txt)

.PHONY: setup demo test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): $(REQS) $(MSGS) setup.py setup.cfg scripts/build_msgs.sh scripts/build_llama.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] torch (local CPU wheel first, so nothing pulls CUDA)"
	$(PIP) install torch==2.13.0 $(QUIET_PIP)
	@echo "[setup] ROS 2 Kilted wheels, perception and test requirements"
	$(PIP) install -r requirements.txt $(QUIET_PIP)
	@if [ -f requirements-llm.txt ]; then echo "[setup] on-device LLM stack"; \
	  $(PIP) install -r requirements-llm.txt $(QUIET_PIP); fi
	@if [ -f requirements-nodeps.txt ]; then $(PIP) install --no-deps -r requirements-nodeps.txt $(QUIET_PIP); fi
	@echo "[setup] llama.cpp, portable x86-64 build (see README: Portable llama.cpp build)"
	scripts/build_llama.sh $(VENV)
	@echo "[setup] building fatigue_msgs into $(VENV)"
	scripts/build_msgs.sh $(VENV)
	$(PIP) install --no-deps --no-build-isolation -e . $(QUIET_PIP)
	@echo "[setup] checking that llama.cpp runs on this CPU"
	$(PY) -m fatigue_llm.llm.cpucheck
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/fatigue-llm demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider test

test-fast: setup
	$(PY) -m pytest -q -m "not slow" test

lint: setup
	$(PY) -m ruff check .

format: setup
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) bench/bench_perception.py
	$(PY) bench/bench_vehicle.py
	$(PY) bench/bench_faiss.py
	$(PY) bench/bench_perception_node.py
	$(PY) bench/bench_llm.py --quick
	$(PY) bench/bench_llm.py --tinyllama-latency
	$(PY) bench/bench_intervention_node.py

clean:
	rm -rf build install log
