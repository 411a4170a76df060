# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install the package with its dev extra when needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench reliability install clean redis wrk

$(STAMP): pyproject.toml
	@echo "installing addvocals_async and its dev tools into $(VENV) (first run only, ~30 s)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check addvocals_async tests examples benchmarks reliability
	$(BIN)/ruff format --check addvocals_async tests examples benchmarks reliability

typecheck: $(STAMP)
	$(BIN)/mypy addvocals_async tests examples benchmarks reliability

# The Redis tests and benchmarks start a real redis-server of their own (on a free loopback
# port, persistence off); install the Debian package when it is missing. Quiet when present.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server is missing: installing the Debian package redis-server (apt-get)..."; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null && \
	  echo "installed $$(redis-server --version | cut -d' ' -f1-3)" || \
	  echo "could not install redis-server: the Redis tests will skip (fail under CI)"; }

# Worker processes (pytest-xdist): one more than the cores, at most 4. Most tests wait on
# sockets, timers and child processes rather than the CPU: on two cores three workers
# take about 70 s where one takes 170 s (four contend and take longer again).
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(4, (os.cpu_count() or 1) + 1))')
# Bytecode first: the suite starts about a hundred child processes (CLI, examples, workers),
# and where PYTHONDONTWRITEBYTECODE is set each would compile the package again.
pytest: $(STAMP) redis
	$(BIN)/python -m compileall -q addvocals_async benchmarks reliability > /dev/null
	$(BIN)/python -m pytest --numprocesses $(PYTEST_WORKERS)

test: lint typecheck pytest

# The demo writes its two tracks into demo-output/, replacing the previous run's.
demo: $(STAMP)
	@echo "running the demo: simulator, receiver, one task, two MP3s into demo-output/"
	$(BIN)/addvocals demo

# wrk loads the receivers from a core of its own (taskset pins it and the servers when
# there are two cores or more); install the Debian package when it is missing. The speed
# extra (orjson, uvloop) is installed so that its row is measured too.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "wrk is missing: installing the Debian package wrk (apt-get)..."; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null && \
	  echo "installed $$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)" || \
	  echo "could not install wrk: the benchmarks load from Python instead (noisier)"; }

bench: $(STAMP) redis wrk
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[speed]'
	$(BIN)/python -m benchmarks

# The figures of issue 10 (soak, fuzz, forgery, exhaustion, restart) as one table; exits 1
# when any figure misses its goal. About 6 minutes on 2 cores; CI runs the short version
# (tests/test_reliability.py).
reliability: $(STAMP)
	$(BIN)/python -m reliability

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache demo-output
