# The two commands of the README. Each one builds or refreshes .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the venv installs: everything for `make test`; `test-all`'s other venvs need only tests.
EXTRAS ?= dev

# Every Python pollkit declares (pyproject.toml's classifiers; a test keeps the two in step).
PYTHONS := 3.10 3.11 3.12 3.13

.PHONY: demo test test-all lint typecheck unit docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pollkit demo

lint: $(STAMP)
	$(BIN)/ruff check pollkit tests examples benchmarks
	$(BIN)/ruff format --check pollkit tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# `make test` with the default interpreter (which must exist), then the suite again under every
# other declared Python found on this machine, each in a venv of its own (.venv-X.Y). Lint and
# mypy run once: their settings already target the lowest version.
test-all: test
	@default=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	for v in $(PYTHONS); do \
		if [ "$$v" = "$$default" ]; then continue; fi; \
		if py=$$(.ci/find-python $$v); then \
			echo "== Python $$v ($$py)"; \
			$(MAKE) --no-print-directory unit PYTHON=$$py VENV=.venv-$$v EXTRAS=test || exit 1; \
		else \
			echo "== Python $$v: not on this machine, skipped"; \
		fi; \
	done

# The documentation site from docs/ (mkdocs.yml) into site/; --strict turns every warning (a
# broken link or anchor, a docstring mkdocstrings cannot read) into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf .venv .venv-* build site *.egg-info
