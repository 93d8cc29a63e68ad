# toycode — `make demo` and `make test` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the CPU build of torch; a bare `pip install torch` would pull a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: venv demo test figures checkpoints bench clean

# MNIST: a copy of the official files beside the checkout (../shared/data/mnist) is used when
# there is one; otherwise $$TOYCODE_DATA or ~/.cache/toycode, downloading with checksums
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mnist/t10k-images-idx3-ubyte.gz),)
export TOYCODE_DATA ?= $(SHARED_DATA)
endif

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

TOYCODE := $(VENV)/bin/toycode
SWEEP_METHODS := bon code smc dps exact-guidance
SWEEP_GRID := N=1,2,4,8,16,32;B=10;K=8,32,128;T=100

# every figure in figures/ and the sweep tables behind them (about 10 minutes on 2 cores)
figures: $(STAMP)
	$(TOYCODE) demo --out-dir figures
	for p in between box ring; do \
		rm -f figures/sweeps/$$p/results.jsonl; \
		methods="$(SWEEP_METHODS)"; [ $$p = box ] && methods="bon code smc exact-guidance"; \
		$(TOYCODE) tradeoff --problem $$p --methods $$methods --grid "$(SWEEP_GRID)" \
			--seeds 5 --n 512 --out figures/sweeps/$$p || exit 1; \
		for k in frontier distance-nfe; do \
			$(TOYCODE) plot figures/sweeps/$$p --kind $$k --out figures/$${p}_$$k.png || exit 1; \
		done; \
	done
	$(TOYCODE) plot figures/sweeps/between --kind genealogy --out figures/between_genealogy.png
	$(TOYCODE) mnist-demo --out-dir figures
	$(TOYCODE) mnist-gmm --out-dir figures

# reproduces the committed checkpoints: the 2-D MLP (~2.5 min on 2 cores), the MNIST classifier
# (~1 min) and the MNIST UNet (~40 min); MNIST comes from $$TOYCODE_DATA or is downloaded
checkpoints: $(STAMP)
	$(TOYCODE) train --problem between --out toycode/checkpoints/mlp_gmm3.pt \
		--steps 8000 --seed 0 --restart
	$(TOYCODE) train-mnist --model classifier --seed 0
	$(TOYCODE) train-mnist --model unet --steps 12000 --seed 0 --restart

bench: $(STAMP)
	$(PY) benchmarks/code_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
