# Two commands set everything up: `make lab` (open the course) and `make test` (run every test,
# the lessons on their short schedules, as CI does). `make test-full` re-executes every lesson on
# its full schedule; `make site` builds the course as a static HTML book from the committed
# notebooks (nothing re-executed) into build/site/. All create .venv and install requirements.txt
# (the package and its pinned dependencies from pyproject.toml) once; they reinstall only when either
# changes. PYTEST_ARGS narrows a test run, e.g. `make test PYTEST_ARGS=tests`. `make mutation
# MODULE=fedcore` mutation-tests one helpers module (tools/mutation.py; installs mutmut on first use),
# stopped after MUTATION_TIMEOUT seconds (MUTATION_ARGS=--all-tests adds the slow whole-lesson suites).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

PYTEST_ARGS ?=
MODULE ?= fedcore
MUTATION_TIMEOUT ?= 1800
MUTATION_ARGS ?=

.PHONY: lab test test-full site mutation clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	COURSE_FAST=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-full: $(STAMP)
	COURSE_FAST=0 $(BIN)/python -m pytest $(PYTEST_ARGS)

site: $(STAMP)
	$(BIN)/python -m helpers.site

mutation: $(STAMP)
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[mutation]"
	$(BIN)/python tools/mutation.py $(MODULE) --timeout $(MUTATION_TIMEOUT) --survivors $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build
