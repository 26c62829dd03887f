# Two commands do everything on a fresh machine (see README):
#   make test    set up .venv and run the test suite
#   make speak   set up .venv and synthesise Arabic speech to out/speech.wav
PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEXT ?= مرحبا، أنا نطق. كيف يمكنني مساعدتك اليوم؟
MODEL_DIR ?= $(NUTQ_MODEL_DIR)

.PHONY: setup test test-slow speak golden refenv clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (set PY=python3.x, >= 3.11)"; exit 1; }
	test -x $(VPY) || $(PY) -m venv $(VENV)
	# The CPU torch wheel first (pinned), so the editable install never pulls CUDA builds.
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[test,serve]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest tests

# Full official sizes and live comparisons with the official package (needs `make refenv`).
test-slow: $(STAMP)
	$(VPY) -m pytest tests -m "slow or refenv"

speak: $(STAMP)
	@mkdir -p out
	@if [ -z "$(MODEL_DIR)" ]; then \
	  echo "No MODEL_DIR/NUTQ_MODEL_DIR given: using a random tiny checkpoint in out/tiny-model (noise, not speech)."; \
	  test -f out/tiny-model/nutq.json || $(VENV)/bin/nutq make-checkpoint out/tiny-model --size tiny --force; \
	  $(VENV)/bin/nutq speak "$(TEXT)" -o out/speech.wav --model-dir out/tiny-model; \
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
