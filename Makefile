# `make report` and `make test` do all set-up themselves: .venv, packages, dataset.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout 900

.PHONY: test test-fast test-portable report audit data lab kernel clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[report,dev,cluster]'
	$(BIN)/python -m ipykernel install --sys-prefix --name bnext --display-name "Python (bnext)" >/dev/null
# git sees a notebook that Jupyter ran and saved as unchanged (see bnext_lib/nbclean.py)
	if git rev-parse --git-dir >/dev/null 2>&1; then git config filter.bnext-notebook.clean '$(PYTHON) bnext_lib/nbclean.py %f'; fi
	touch $@

# Fashion-MNIST from Debian's package when we are root on a Debian-like system; the loader
# also looks under data/ and can download with torchvision where there is internet.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
		echo "warning: could not install dataset-fashion-mnist; see data/README.md"; \
	else echo "note: not root, skipping Debian's dataset-fashion-mnist; see data/README.md"; fi

# unit tests, then the four notebooks at their smoke defaults under nbval (outputs go to reports/.scratch/); the
# notebooks run even when a unit test fails, and the target fails if either did
# the tests train into build/test/ (tests/conftest.py), emptied first: every run of the suite trains what it tests
test: $(STAMP) data
	@rm -rf build/test
	@unit=0; notebooks=0; \
	(set -x; $(BIN)/python -m pytest tests) || unit=$$?; \
	(set -x; $(BIN)/python -m pytest $(NBVAL) notebooks) || notebooks=$$?; \
	echo "make test: unit tests $$([ $$unit = 0 ] && echo passed || echo FAILED)," \
	     "notebooks $$([ $$notebooks = 0 ] && echo passed || echo FAILED)"; \
	[ $$unit = 0 ] && [ $$notebooks = 0 ]

# the fast tier for contributors: the unit tests not marked slow (no training run, compilation, subprocess or large
# model), about two minutes on 2 cores; `make test` stays what CI runs
test-fast: $(STAMP) data
	$(BIN)/python -m pytest -m "not slow" -q tests

# the unit tests under other CPU kernels than this machine's best: oneDNN and ATen capped at AVX2 (an older or
# another vendor's x86 CPU), then the tests marked `portability` on ATen's generic kernels (a CPU without AVX2, such
# as ARM). Each setting gets its own torch.compile cache: one filled under another setting is reused and then fails
# (C++ errors, or corrupted memory under a capped oneDNN). Not part of `make test`: about twice its time.
test-portable: $(STAMP) data
	rm -rf build/test-avx2 build/test-default
	TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/build/inductor-avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
		BNEXT_RUNS=$(CURDIR)/build/test-avx2/runs BNEXT_LEDGER=$(CURDIR)/build/test-avx2/ledger \
		$(BIN)/python -m pytest tests
	TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/build/inductor-default ATEN_CPU_CAPABILITY=default \
		BNEXT_RUNS=$(CURDIR)/build/test-default/runs BNEXT_LEDGER=$(CURDIR)/build/test-default/ledger \
		$(BIN)/python -m pytest -m portability tests

# the four notebooks at the cpu profile -> reports/ (REPORT.md, figures, tables, executed/); PROFILE=gpu -> reports/gpu/,
# PROFILE=smoke -> reports/.scratch/. Runs come from the profile's committed ledger (reports/ledger/ for cpu); only
# missing runs train. BUDGET_MIN=100: one part of a report built in parts (commit the ledger after it, and the same
# command continues, on any machine); WORKERS=1: one run at a time; ONLY=01_architecture_study: those notebooks only
PROFILE ?= cpu
BUDGET_MIN ?=
WORKERS ?=
ONLY ?=
report: $(STAMP) data
	$(BIN)/python -m bnext_lib.report --profile $(PROFILE) $(if $(BUDGET_MIN),--budget-min $(BUDGET_MIN)) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(ONLY),--only $(ONLY))

# re-train a seeded random sample of the profile's ledger (what fits 15 minutes by the runs' recorded times, at least
# 3 runs) and hold it against the records: identical on the records' kind of machine, within the measured
# cross-kernel spread elsewhere
SEED ?= 0
audit: $(STAMP) data
	$(BIN)/python -m bnext_lib.audit --profile $(PROFILE) --seed $(SEED) $(if $(AT_LEAST),--at-least $(AT_LEAST))

# JupyterLab (the pinned `lab` extra, installed once) in the project's environment, serving the repository (notebooks,
# reports/, docs/) and opening notebooks/; the "Python (bnext)" kernel is registered in .venv by set-up; a notebook
# run and saved there keeps its outputs and `git status` stays clean (bnext_lib/nbclean.py)
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[report,dev,cluster,lab]'
	touch $@

lab: $(LAB_STAMP) data
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks \
		--FileContentsManager.post_save_hook=bnext_lib.nbclean.post_save \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# register the kernel for a Jupyter installed elsewhere (per user)
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name bnext --display-name "Python (bnext)"

clean-venv:
	rm -rf $(VENV)
