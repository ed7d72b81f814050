# The two set-up commands: `make run` (server + local Ray + SQLite, then a demo job on digits)
# and `make test`. Each creates .venv and installs what it needs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# CPU torch first, on its own, so nothing that depends on torch pulls a CUDA build.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

run: install system-deps
	bash scripts/demo.sh

test: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache
