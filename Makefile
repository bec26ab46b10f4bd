SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
# The stamp's name is a hash of what the venv is built from: make rebuilds it when that changes
# and does nothing otherwise.
STAMP := $(VENV)/.stamp-$(shell cat requirements.txt requirements-sim.txt setup.py setup.cfg | sha256sum | cut -d' ' -f1)

# ROS domain for one test or bench run: random in 1..101 unless given (`make test
# ROS_TEST_DOMAIN_ID=7`). ROS_DOMAIN_ID from the caller's shell is ignored on purpose: it may be
# the domain of a live robot.
ROS_TEST_DOMAIN_ID ?= $(shell echo $$(( RANDOM % 101 + 1 )))

# Shell prefix for test and bench commands: localhost-only discovery, the domain above, ROS logs
# in a temp dir removed afterwards, compile caches under .cache/. BITVLA_TEST_ENV tells
# test/conftest.py that these were set by the harness, so it keeps them.
TEST_ENV = log_dir=$$(mktemp -d -t bitvla-roslog.XXXXXX); trap 'rm -rf "$$log_dir"' EXIT; \
	export BITVLA_TEST_ENV=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	ROS_DOMAIN_ID=$(ROS_TEST_DOMAIN_ID) ROS_LOG_DIR="$$log_dir" \
	TORCHINDUCTOR_CACHE_DIR="$(CURDIR)/.cache/torchinductor" \
	TORCH_EXTENSIONS_DIR="$(CURDIR)/.cache/torch_extensions" BITVLA_CACHE_DIR="$(CURDIR)/.cache/bitvla"; \
	echo "ROS_DOMAIN_ID=$$ROS_DOMAIN_ID ROS_AUTOMATIC_DISCOVERY_RANGE=$$ROS_AUTOMATIC_DISCOVERY_RANGE";

.PHONY: setup test bench demo clean

# setup: the venv at .venv with requirements.txt, requirements-sim.txt (LIBERO) and this package
# (editable). Instant when nothing it is built from has changed.
setup: $(STAMP)

$(STAMP):
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	# opencv-python-headless (an earlier pin) and opencv-python both own cv2/: keep only the latter.
	$(VENV)/bin/pip uninstall -y -q opencv-python-headless 2>/dev/null || true
	$(VENV)/bin/pip install -r requirements.txt -r requirements-sim.txt
	$(VENV)/bin/pip install --no-deps -e .
	rm -f $(VENV)/.stamp-*
	touch $@

# test: the whole suite, isolated from other ROS traffic.
test: setup
	@$(TEST_ENV) $(VENV)/bin/python -m pytest -q test

# demo: the shipped default model solving LIBERO tasks through ROS 2 (sim + policy nodes, lockstep);
# prints success and latency, writes MP4s and a chart to out/demo. A few minutes on 2 cores.
demo: setup
	@$(TEST_ENV) $(VENV)/bin/bitvla demo --output out/demo

# bench: every bench/*.py script in turn, same environment; fails if any of them fails.
bench: setup
	@$(TEST_ENV) shopt -s nullglob; scripts=(bench/*.py); status=0; \
	[ $${#scripts[@]} -gt 0 ] || echo "no benchmarks in bench/ yet"; \
	for script in "$${scripts[@]}"; do \
		echo "== $$script"; $(VENV)/bin/python "$$script" || status=1; \
	done; exit $$status

# clean: build outputs and test caches. Keeps .venv (rm -rf .venv to rebuild it) and the compile
# caches in .cache/ (slow to refill).
clean:
	rm -rf build *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
