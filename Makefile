# Two commands: `make run` and `make test`. Both create .venv and install everything when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lint clean bench bench-install bench-cancel bench-orphans bench-reconcile \
	bench-api bench-overhead bench-pages bench-tasks bench-sweeps bench-report screenshots cli-recording

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build that installs from local disk; see README.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[server,train,dev,trackers]"
	touch $(STAMP)

run: install
	$(PY) -m api.dev

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .

# Benchmarks: not part of `make test`; run by hand, results committed (see BENCHMARKS.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[server,train,dev,trackers,bench]"
	touch $(BENCH_STAMP)
bench-install: $(BENCH_STAMP)

bench-cancel: bench-install
	$(PY) -m bench.cancel_latency $(CANCEL_ARGS)
bench-orphans: bench-install
	$(PY) -m bench.orphan_detection $(ORPHAN_ARGS)
bench-reconcile: bench-install
	$(PY) -m bench.reconcile_pass $(RECONCILE_ARGS)
bench-api: bench-install
	$(PY) -m bench.api_latency $(API_ARGS)
bench-overhead: bench-install
	$(PY) -m bench.training_overhead $(OVERHEAD_ARGS)
bench-pages: bench-install
	$(PY) -m bench.monitor_pages $(PAGES_ARGS)
bench-tasks: bench-install
	$(PY) -m bench.task_sdk $(TASKS_ARGS)
bench-sweeps: bench-install
	$(PY) -m bench.sweeps $(SWEEPS_ARGS)
screenshots: bench-install
	$(PY) -m bench.screenshots
cli-recording: bench-install
	$(PY) -m bench.cli_recording
bench-report: bench-install
	$(PY) -m bench.report

bench: bench-cancel bench-orphans bench-reconcile bench-api bench-overhead bench-pages bench-tasks bench-sweeps
	$(MAKE) bench-report

clean:
	rm -rf $(VENV) var .pytest_cache
