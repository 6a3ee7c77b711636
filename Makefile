# `make report` and `make test` do all set-up themselves: .venv, packages, dataset.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test report data lab clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[report,dev]'
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

test: $(STAMP) data
	$(BIN)/python -m pytest

report: $(STAMP) data
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then $(BIN)/python -m bnext_lib.report; \
	else echo "no notebooks yet: the report lands with the research-report issue"; fi

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet jupyterlab
	$(BIN)/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
