# The two set-up commands: `make run` (server + local Ray + SQLite, then a demo job on digits)
# and `make test`. Each creates .venv and installs what it needs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock system-deps run demo-upload test lint bench clean

TORCH := torch==2.13.0

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# CPU torch first, on its own, so nothing that depends on torch pulls a CUDA build.
	$(VENV)/bin/pip install --quiet $(TORCH)
	# Then the exact versions requirements.lock pins (dev extra included; torch is left out of it),
	# the project itself without resolving again, and a check that the lock covers pyproject.toml.
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	$(VENV)/bin/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve requirements.lock from pyproject.toml (run it after changing a dependency; existing
# pins are kept unless LOCK_ARGS=--upgrade). torch is constrained to $(TORCH) but left out of the
# lock; a CUDA resolution (nvidia-* packages, where the CPU wheel is not on disk) is refused.
lock: $(VENV)/bin/pip-compile
	echo "$(TORCH)" | CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --extra dev --strip-extras \
	  --no-emit-index-url --no-emit-find-links --unsafe-package torch --unsafe-package pip --unsafe-package setuptools \
	  -c /dev/stdin $(LOCK_ARGS) -o requirements.lock pyproject.toml
	! grep -q '^nvidia-' requirements.lock || { echo "requirements.lock took a CUDA torch's packages" >&2; exit 1; }

$(VENV)/bin/pip-compile:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet 'pip-tools>=7.6,<8'

system-deps:
	bash scripts/system-deps.sh

run: install system-deps
	bash scripts/demo.sh

# A user's own network end to end: export (scripts/demo_net.py), upload the .pt2, prune, fetch.
demo-upload: install system-deps
	bash scripts/demo-upload.sh

# Two pytest-xdist workers, each taking whole files (module-scoped servers, Ray clusters and
# browsers start once per module, in one worker), in collection order: files with `slow` tests
# first (tests/conftest.py); `pytest` alone still runs the suite serially.
test: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder

# Lint, format check and type check (config in pyproject.toml); any finding fails. `ruff format .`
# and `ruff check --fix .` repair most lint and format findings.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
