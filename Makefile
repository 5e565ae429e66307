# suma: two commands do all the set-up on a fresh machine.
#   make book   executes every notebook with papermill and builds the HTML book (_build/html/index.html)
#   make test   runs ruff and the whole test suite (unit tests, notebooks through papermill, mutations, the
#               strict book build)

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= ci
PY      := $(VENV)/bin/python
# Where the machine keeps a CPU build of torch on disk, take it (no multi-GB CUDA download); elsewhere
# any torch >= 2.1 will do (Colab and GPU machines keep their own).
TORCH   ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),torch==2.13.0,torch>=2.1)
STAMP   := $(VENV)/.installed

.PHONY: venv book test lab bench sync chapter clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[book,models,test,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (suma)"
	touch $(STAMP)

book: $(STAMP)
	PROFILE=$(PROFILE) $(PY) -m tools.build_book

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# Regenerate every notebooks/<slug>.ipynb from its MyST source notebooks/<slug>.md.
sync: $(STAMP)
	$(PY) -m tools.sync_notebooks

# One chapter: sync the pair, run it in profile ci (PROFILE=full for the article's scale), show its claims.
chapter: $(STAMP)
	@test -n "$(SLUG)" || (echo "usage: make chapter SLUG=<slug>" && exit 2)
	$(PY) -m tools.chapter $(SLUG) --profile $(PROFILE)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build .pytest_cache .hypothesis

distclean: clean
	rm -rf $(VENV) *.egg-info
