# The two commands of the README. Each one builds or refreshes .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every Python pollkit declares (pyproject.toml's classifiers; a test keeps the two in step).
PYTHONS := 3.10 3.11 3.12 3.13

.PHONY: demo test test-all lint typecheck unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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
			$(MAKE) --no-print-directory unit PYTHON=$$py VENV=.venv-$$v || exit 1; \
		else \
			echo "== Python $$v: not on this machine, skipped"; \
		fi; \
	done

clean:
	rm -rf .venv .venv-* build *.egg-info
