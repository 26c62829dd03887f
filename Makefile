# Two commands do everything on a fresh machine (see README):
#   make test    set up .venv and run the test suite
#   make speak   set up .venv and synthesise Arabic speech to out/speech.wav
PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEXT ?= مرحبا، أنا نطق. كيف يمكنني مساعدتك اليوم؟
MODEL_DIR ?= $(NUTQ_MODEL_DIR)
# Random weights never choose to stop, so `make speak` without a model caps their noise at 3 s
# (25 speech tokens per second); real weights stop by themselves.
RANDOM_TOKENS ?= 75

.PHONY: setup test test-slow speak golden refenv clean

# pip runs without -q so that its progress shows: the first setup downloads about 300 MB.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (set PY=python3.x, >= 3.11)"; exit 1; }
	@echo "== Setting up $(VENV) (first run only; a few minutes, mostly downloads):"
	@echo "   1/3 pip itself, 2/3 CPU torch 2.13.0 (a 190 MB wheel), 3/3 nutq with its test and server extras (~120 MB)"
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	@# The CPU torch wheel first (pinned), so the editable install never pulls CUDA builds.
	$(VPY) -m pip install torch==2.13.0
	$(VPY) -m pip install -e '.[test,serve,train]'
	@# The Python client (clients/python, websockets + httpx): its tests in tests/clients use it.
	$(VPY) -m pip install -e clients/python
	touch $(STAMP)
	@echo "== $(VENV) is ready"

setup: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest tests

# Full official sizes and live comparisons with the official package (needs `make refenv`).
test-slow: $(STAMP)
	$(VPY) -m pytest tests -m "slow or refenv"

speak: $(STAMP)
	@mkdir -p out
	@if [ -z "$(MODEL_DIR)" ]; then \
	  echo "No MODEL_DIR/NUTQ_MODEL_DIR given: using a random tiny checkpoint in out/tiny-model."; \
	  echo "Random weights make noise, not speech, and never stop: capped at $(RANDOM_TOKENS) tokens (RANDOM_TOKENS=N to change)."; \
	  test -f out/tiny-model/nutq.json || $(VENV)/bin/nutq make-checkpoint out/tiny-model --size tiny --force; \
	  $(VENV)/bin/nutq speak "$(TEXT)" -o out/speech.wav --model-dir out/tiny-model --max-tokens $(RANDOM_TOKENS); \
	else \
	  $(VENV)/bin/nutq speak "$(TEXT)" -o out/speech.wav --model-dir "$(MODEL_DIR)"; \
	fi

refenv:
	bash tools/refenv/build.sh

# Regenerate tests/golden/ from the official implementation (needs `make refenv`).
golden:
	bash tools/parity/make_golden.sh

clean:
	rm -rf $(VENV) out .pytest_cache
