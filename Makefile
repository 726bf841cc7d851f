# Everyday commands. `make demo` and `make test` set everything up themselves (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }
# portable (default): x86-64-v3, runs on any machine of this workplace and most laptops; native: this CPU only
LLAMA_BUILD ?= portable
STAMP := $(VENV)/.setup-stamp
MSGS := $(wildcard fatigue_msgs/msg/*.msg fatigue_msgs/action/*.action) fatigue_msgs/CMakeLists.txt fatigue_msgs/package.xml
REQS := $(filter-out requirements-onnx.txt,$(wildcard requirements*.txt))
# the ONNX export environment (onnx needs protobuf>=6, the main env pins <5): `make onnx-env`
ONNX_VENV ?= .venv-onnx
ONNX_STAMP := $(ONNX_VENV)/.onnx-stamp

.PHONY: eval-demo setup demo test test-fast lint format bench bench-builds adapter clean onnx-env

# the llama.cpp build is checked on every setup (a no-op when that build is installed and passed here)
setup: $(STAMP)
	@scripts/install_system_deps.sh
	@scripts/build_llama.sh $(VENV) $(if $(filter native,$(LLAMA_BUILD)),--native,)
	@$(PY) -m fatigue_llm.llm.cpucheck

$(STAMP): $(REQS) $(MSGS) setup.py setup.cfg scripts/build_msgs.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] torch (local CPU wheel first, so nothing pulls CUDA)"
	$(PIP) install torch==2.13.0 $(QUIET_PIP)
	@echo "[setup] ROS 2 Kilted wheels, perception and test requirements"
	$(PIP) install -r requirements.txt $(QUIET_PIP)
	@if [ -f requirements-llm.txt ]; then echo "[setup] on-device LLM stack"; \
	  $(PIP) install -r requirements-llm.txt $(QUIET_PIP); fi
	@if [ -f requirements-nodeps.txt ]; then $(PIP) install --no-deps -r requirements-nodeps.txt $(QUIET_PIP); fi
	@echo "[setup] building fatigue_msgs into $(VENV)"
	scripts/build_msgs.sh $(VENV)
	$(PIP) install --no-deps --no-build-isolation -e . $(QUIET_PIP)
	@touch $(STAMP)

# the ONNX export environment for `fatigue-llm export RUN --onnx DIR` (about a minute from scratch, then a no-op)
onnx-env: $(ONNX_STAMP)

$(ONNX_STAMP): requirements-onnx.txt
	@test -x $(ONNX_VENV)/bin/python || python3 -m venv $(ONNX_VENV)
	@echo "[onnx-env] torch (local CPU wheel first, so nothing pulls CUDA)"
	$(ONNX_VENV)/bin/python -m pip --disable-pip-version-check -q install torch==2.13.0 $(QUIET_PIP)
	@echo "[onnx-env] transformers, onnx, onnxscript"
	$(ONNX_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements-onnx.txt $(QUIET_PIP)
	@echo "$(CURDIR)" > "$$($(ONNX_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fatigue_llm_repo.pth"
	@touch $(ONNX_STAMP)

demo: setup
	$(VENV)/bin/fatigue-llm demo

# simulate two labelled drives, replay them through the system, judge them by their scenarios' pass criteria
EVAL_DEMO := build/eval-demo
eval-demo: setup
	rm -rf $(EVAL_DEMO)
	$(VENV)/bin/fatigue-llm simulate --scenario configs/scenarios/highway_drowsiness.yaml --out $(EVAL_DEMO)/highway_drowsiness --quiet
	$(VENV)/bin/fatigue-llm simulate --scenario configs/scenarios/microsleep_episode.yaml --out $(EVAL_DEMO)/microsleep_episode --quiet
	$(VENV)/bin/fatigue-llm evaluate $(EVAL_DEMO)/highway_drowsiness --scenario configs/scenarios/highway_drowsiness.yaml --out $(EVAL_DEMO)/highway_drowsiness-eval
	$(VENV)/bin/fatigue-llm evaluate $(EVAL_DEMO)/microsleep_episode --scenario configs/scenarios/microsleep_episode.yaml --out $(EVAL_DEMO)/microsleep_episode-eval

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

# portable vs -march=native llama.cpp decode speed on this machine (builds the native one apart, ~5 min)
bench-builds: setup
	@test -x build/native-venv/bin/python || python3 -m venv build/native-venv
	scripts/build_llama.sh build/native-venv --native
	$(PY) bench/bench_llm.py --builds $$(build/native-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# the bundled LoRA adapter of the embedded SmolLM2 (committed; this rebuilds it from our generated data)
ADAPTER := fatigue_llm/llm/data/smollm2-fatigue-lora.gguf
adapter: setup
	$(VENV)/bin/fatigue-llm generate-data build/adapter/cases.csv --rows 3000 --seed 0
	$(VENV)/bin/fatigue-llm train --config configs/smollm2_demo.yaml
	$(VENV)/bin/fatigue-llm train --config configs/smollm2_demo.yaml --mode compare --limit 30
	$(VENV)/bin/fatigue-llm export runs/smollm2-demo --lora-gguf $(ADAPTER)
	$(PY) scripts/adapter_card.py runs/smollm2-demo $(ADAPTER)

clean:
	rm -rf build install log
