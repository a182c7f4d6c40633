# Two commands: `make run` and `make test`. Both create .venv and install what they need: `make run` the service,
# the built-in tasks and the trackers (`make install`); `make test` also the test tooling (`make install-dev`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
LOGS := var/log/api.log var/log/worker.log var/log/reconciler.log var/log/access.log

.PHONY: install install-dev run logs reload test test-unit lint clean bench bench-install bench-cancel bench-orphans bench-reconcile \
	bench-api bench-overhead bench-pages bench-tasks bench-scheduler bench-sweeps bench-report screenshots cli-recording

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build that installs from local disk; see README.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[server,train,trackers]"
	touch $(STAMP)

# The test tooling (pytest, Playwright, schemathesis, ruff, import-linter): only `make test` and its kin need it.
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[server,train,trackers,dev]"
	touch $(DEV_STAMP)

run: install
	$(PY) -m api.dev

# What `make run` writes to files rather than to its terminal: access log, job output, every child's lines.
logs:
	tail -n 20 -F $(LOGS)

# After editing a task: `make run` restarts only its worker, which imports the task modules again (SIGHUP).
PID_FILE ?= var/make-run.pid
reload:
	@test -f $(PID_FILE) || { echo "make run is not running here (no $(PID_FILE))" >&2; exit 1; }
	kill -HUP $$(cat $(PID_FILE))

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install-dev
	$(PY) -m pytest tests/unit

lint: install-dev
	$(VENV)/bin/ruff check .

# Benchmarks: not part of `make test`; run by hand, results committed (see BENCHMARKS.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(DEV_STAMP)
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
bench-scheduler: bench-install
	$(PY) -m bench.scheduler $(SCHEDULER_ARGS)
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
