# The two commands: `make run` serves the app, `make test` runs ruff, then the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)

.PHONY: run test setup

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/flask --app wsgi demo --if-no-model
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest
