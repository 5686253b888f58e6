# Every target creates .venv and installs pipedeck into it when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean constraints

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pipedeck sample_pipelines/ci.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine
	@# bytecode written now, even under PYTHONDONTWRITEBYTECODE: a module first imported on a
	@# test's event loop is then loaded, not compiled there (the loop gate counts that time)
	$(PY) -m compileall -q engine tui tests
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy engine

bench: $(STAMP)
	$(PY) bench/run.py

constraints: $(STAMP)  # pin what a fresh machine gets to what is installed here
	{ head -n 2 .ci/constraints.txt; $(PY) -m pip freeze --exclude-editable; } > .ci/constraints.new
	mv .ci/constraints.new .ci/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache sample_pipelines/.pipedeck
