# Two commands on a fresh machine: `make study` (set up, then run the main job) and `make test`.
# Set-up creates .venv, installs torch==2.13.0 only when no torch is importable (a GPU user's torch, visible
# through --system-site-packages, is kept), then the package with the extras the tests need. Re-running is a
# no-op unless pyproject.toml changed. The installed torch is pinned while installing the extras, so nothing
# (transformer-lens pulls torch) can replace it with a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.grokscope-installed
# The extras set-up installs: what the tests need (CI adds `sweep`, Ray for the distributed study test).
EXTRAS ?= dev,interp,track

.PHONY: setup study test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	@$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(VENV)/torch-pin.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

# The main job: the micro study on this CPU (data, training, analyses, transfer, report) -> reports/micro/.
# Resumes where it stopped when interrupted.
study: setup
	$(VENV)/bin/grokscope study --preset micro --out reports/micro

# The tests, after the import contract (dependencies point down; the report stage never imports torch): the suite
# and the `gpu` checks as a CPU dry run (--device cpu --quick), in one process per core (pytest-xdist; a test file
# stays in one process, so its module fixtures are built once; files go out in the order tests/conftest.py gives,
# the longest first), each training on one thread. CI sets TEST_MARKS="not slow" to add its end-to-end `ci` checks to
# the same run.
TEST_MARKS ?= not slow and not ci
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder -m "$(TEST_MARKS)" --device cpu --quick \
		--durations=25

bench: setup
	$(VENV)/bin/python benchmarks/bench_data.py

clean-venv:
	rm -rf $(VENV)
