# toycode — `make demo` and `make test` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the CPU build of torch; a bare `pip install torch` would pull a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: venv demo test figures checkpoints bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,sd]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/toycode demo

test: $(STAMP)
	$(PY) -m pytest

figures: $(STAMP)
	$(VENV)/bin/toycode demo --out-dir figures

# reproduces the committed checkpoint of the 2-D MLP (about 2 minutes on 2 cores)
checkpoints: $(STAMP)
	$(VENV)/bin/toycode train --problem between --out toycode/checkpoints/mlp_gmm3.pt \
		--steps 8000 --seed 0 --restart

bench: $(STAMP)
	$(PY) benchmarks/code_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
