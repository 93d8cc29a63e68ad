# toycode — `make demo` and `make test` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the CPU build of torch; a bare `pip install torch` would pull a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: venv demo test test-fast lint figures notebooks docs checkpoints bench dist-check clean leaderboard \
	fashion-gates fashion-tradeoff course

# MNIST and Fashion-MNIST: a copy of the official files beside the checkout
# (../shared/data/mnist, ../shared/data/fashion-mnist) is used when there is one; otherwise
# $$TOYCODE_DATA or ~/.cache/toycode, downloading with checksums
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mnist/t10k-images-idx3-ubyte.gz $(SHARED_DATA)/fashion-mnist/t10k-images-idx3-ubyte.gz),)
export TOYCODE_DATA ?= $(SHARED_DATA)
endif

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,sd,notebooks,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/toycode demo

test: $(STAMP) lint
	$(PY) -m pytest

# the edit-test loop: everything but the notebooks, the docs site and tests marked slow
# (under 90 s on 2 cores); pytest's exit 5 (nothing collected) fails it as it fails `make test`
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/test_notebooks.py \
		--ignore=tests/test_course_notebooks.py --ignore=tests/test_docs.py

# ruff's rules and its formatting on everything, pyright (basic, [tool.pyright]) on the core
lint: $(STAMP)
	$(VENV)/bin/ruff check toycode tests benchmarks docs/hooks.py
	$(VENV)/bin/ruff format --check toycode tests benchmarks docs/hooks.py
	$(PY) -m pyright --pythonpath $(PY)

TOYCODE := $(VENV)/bin/toycode
SWEEP_METHODS := bon code smc dps exact-guidance
SWEEP_GRID := N=1,2,4,8,16,32;B=10;K=8,32,128;T=100

# every figure in figures/ and the sweep tables behind them (about 40 minutes on 2 cores)
figures: $(STAMP)
	$(TOYCODE) demo --out-dir figures
	$(TOYCODE) demo --process flow --out-dir figures
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
	# genealogy collapse per resampling rule (SMC on between, about 15 s)
	$(TOYCODE) lineages --out figures/lineages.png
	# annealed and product targets: composed scores, SMC, FK correctors (about 90 s)
	$(TOYCODE) compositions --out figures/compositions.png
	# classifier-free guidance against its target and the reward tilt (about a minute)
	$(PY) -m toycode.experiments.cfg_study --out figures/cfg_vs_tilt.png
	# the cheapest route to p*: method × value × allocation, tuned then reported (about 16 min)
	rm -f figures/routes/results.jsonl figures/routes/routes.json
	$(TOYCODE) routes --out figures/routes --figure figures/routes.png
	# the curse of dimension: each family on the MNIST mixture in d = 2 … 784 (about 5 min)
	rm -f figures/dimensions/results.jsonl
	$(TOYCODE) dimensions --out figures/dimensions --figure figures/dimensions.png
	# value estimators against the exact V_t, and CoDe with each value at matched compute
	for p in between box ring; do \
		$(TOYCODE) values --problem $$p --out figures/values_$$p.png || exit 1; \
		rm -f figures/sweeps/values_$$p/results.jsonl; \
		for v in tweedie posterior lookahead learned; do \
			grid="N=1,2,4,8,16,32;B=10;T=100"; \
			[ $$v = lookahead ] && grid="$$grid;M=4;k=4"; [ $$v = posterior ] && grid="$$grid;M=4"; \
			$(TOYCODE) tradeoff --problem $$p --methods code --value $$v --grid "$$grid" \
				--seeds 3 --n 512 --out figures/sweeps/values_$$p || exit 1; \
		done; \
		$(TOYCODE) plot figures/sweeps/values_$$p --kind distance-nfe \
			--out figures/values_$${p}_distance-nfe.png || exit 1; \
	done

# every method at equal compute against the exact targets: figures/leaderboard/ (resumable
# table, leaderboard.md) and figures/leaderboard.png (16 minutes on 2 idle cores)
leaderboard: $(STAMP)
	$(TOYCODE) leaderboard --out figures/leaderboard --figure figures/leaderboard.png

# re-executes the committed notebooks in place at full size, outputs included (15 minutes on 2
# busy cores)
notebooks: $(STAMP)
	env -u TOYCODE_FAST HF_HUB_OFFLINE=1 $(VENV)/bin/jupyter nbconvert --to notebook --execute \
		--inplace --ExecutePreprocessor.timeout=1800 notebooks/*.ipynb

# the student versions of the notebooks (solutions stripped, nbgrader's convention) into build/course/
course: $(STAMP)
	$(PY) -m toycode.course.student --src notebooks --out build/course

# the documentation site, offline, into site/ (the notebook pages show the committed outputs)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# reproduces the committed checkpoints: the 2-D MLP (~2.5 min on 2 cores), the MNIST classifier
# (~1 min), the MNIST UNet (~40 min) and the Fashion-MNIST text-to-image pipeline with its
# classifier (~75 min on one thread) and learned class value (~3 CPU-min), its rectified-flow
# SD3 sibling (~35 CPU-min) and tiny decoder (~10 CPU-min); the data come from $$TOYCODE_DATA
# or are downloaded
checkpoints: $(STAMP)
	$(TOYCODE) train --problem between --out toycode/checkpoints/mlp_gmm3.pt \
		--steps 8000 --seed 0 --restart
	# the flow-matching MLP; one thread, so the weights do not depend on the core count
	OMP_NUM_THREADS=1 $(TOYCODE) train --problem between --process flow \
		--out toycode/checkpoints/mlp_gmm3_flow.pt --steps 8000 --seed 0 --restart
	# the learned soft values of the built-in problems (~2 min each on 2 idle cores)
	for p in between box ring; do OMP_NUM_THREADS=1 $(TOYCODE) train-value --problem $$p; done
	$(TOYCODE) train-mnist --model classifier --seed 0
	$(TOYCODE) train-mnist --model unet --steps 12000 --seed 0 --restart
	# the UNet's learned class value: 4096 base samples at T = 10, no reverse rollouts (one thread)
	OMP_NUM_THREADS=1 $(PY) -m toycode.mnist.class_value train
	# one thread, so the weights do not depend on the core count
	OMP_NUM_THREADS=1 $(PY) -m toycode.sd.fashion train --vae-steps 1500 --unet-steps 3000 \
		--classifier-epochs 3 --seed 0
	rm -rf toycode/checkpoints/fashion-vae
	# the pipeline's learned class value: 4096 base latents, no reverse rollouts (~3 CPU-min)
	OMP_NUM_THREADS=1 $(PY) -m toycode.sd.fashion class-value
	# its rectified-flow StableDiffusion3Pipeline sibling on the same VAE latents, and the tiny
	# decoder (AutoencoderTiny) distilled from that VAE for --score-decoder; one thread each
	OMP_NUM_THREADS=1 $(PY) -m toycode.sd.fashion train-flow --steps 1800 --seed 0
	OMP_NUM_THREADS=1 $(PY) -m toycode.sd.fashion train-taesd --steps 2000 --seed 0

# the Fashion-MNIST pipeline's quality gates: classifier accuracy, prompt fidelity, Fréchet
fashion-gates: $(STAMP)
	$(PY) -m toycode.sd.fashion gates --guidance 7.5 4.5 3 2 1

# reward vs prompt fidelity vs UNet calls on the Fashion-MNIST pipeline, over the ten class
# prompts, 4 seeds (resumable): JPEG compressibility with base, bon, code, svdd, smc at
# N = K = 4, 8; then the competing reward log p(most-confused class | x) with those at
# N = K = 4, 8, 16 and DPS at five guidance scales
fashion-tradeoff: $(STAMP)
	$(PY) -m toycode.sd.fashion tradeoff --out figures/fashion-sweep --seeds 4 --budgets 4 8
	$(PY) -m toycode.sd.fashion tradeoff --reward confusable --seeds 4 --budgets 4 8 16 \
		--scales 0.5 1 2 4 8

bench: $(STAMP)
	$(PY) benchmarks/code_overhead.py

# the wheel installs into a clean venv (CPU torch first, as above) and runs the demo from outside
# the checkout: the problem files and checkpoints travel as package data (about 2 minutes)
DIST := $(abspath build/dist-check)
dist-check: $(STAMP)
	rm -rf $(DIST) && mkdir -p $(DIST)
	$(PY) -m build --wheel --outdir $(DIST) .
	$(PYTHON) -m venv $(DIST)/venv
	$(DIST)/venv/bin/python -m pip install --quiet "$(TORCH)"
	$(DIST)/venv/bin/python -m pip install --quiet $(DIST)/toycode-*.whl
	cd $(DIST) && ./venv/bin/toycode demo --n 256 --backends analytic trained --out-dir figs
	test -s $(DIST)/figs/gmm_between_samples.png

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info site build
