# The two commands of the README:
#   make demo   set up the environment, then run the embedded demo end to end, to the report
#   make test   set up the environment (test extras included), then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# kronfluence (the test suite's independent EK-FAC reference) declares torchvision, which would
# replace the CPU torch with a multi-GB CUDA build: install it without dependencies, then its needs.
KRONFLUENCE := kronfluence==1.0.1
KRONFLUENCE_DEPS := accelerate==1.15.0 einops==0.8.2 einconv==0.1.0 opt_einsum==3.4.0 tqdm==4.70.1

.PHONY: setup setup-test demo test lint report clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[hf,slurm]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[hf,slurm,test]'
	$(BIN)/python -m pip install --quiet --no-deps $(KRONFLUENCE)
	$(BIN)/python -m pip install --quiet $(KRONFLUENCE_DEPS)
	touch $@

# `snakemake --profile slurm` looks for ~/.config/snakemake/slurm: point it at this repo's profile.
link-profile:
	mkdir -p $(HOME)/.config/snakemake
	ln -sfn $(CURDIR)/profiles/slurm $(HOME)/.config/snakemake/slurm

setup: $(VENV)/.installed link-profile

setup-test: $(VENV)/.installed-test link-profile

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report/report.html

lint: setup-test
	$(BIN)/ruff check tikmix scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

test: setup-test
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -ra --durations=15

clean-results:
	rm -rf results logs benchmarks/rules benchmarks/out .snakemake
