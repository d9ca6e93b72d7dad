# pssm — set-up, demo, tests.  `make demo` and `make test` each create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
export MPLBACKEND := Agg

.PHONY: venv demo test test-x64 test-slow lint format bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,nwb]"
	touch $(STAMP)

venv: $(STAMP)

# Peer libraries for benchmarks (dynamax); `particles` gets its own venv inside its benchmark (it pins numpy<2).
$(BENCH_STAMP): $(STAMP) constraints-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -c constraints-bench.txt -e ".[dev,nwb,bench]"
	touch $(BENCH_STAMP)

# Flagship case study on the bundled recording (figures, report and JSON under case_studies/output/).
demo: $(STAMP)
	$(VENV)/bin/pssm demo --out case_studies/output/brain_states

# The suite CI runs (.ci/run); the statistical calibration tests marked `slow` run in `make test-slow`.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15 -m "not slow" tests

# The same suite in float64 (JAX_ENABLE_X64=1: other random draws, other dtypes through every boundary).
test-x64: $(STAMP)
	JAX_ENABLE_X64=1 $(PY) -m pytest -n 2 --dist loadgroup --durations=15 -m "not slow" tests

# Statistical calibration tests (minutes each: posteriors within MCSEs, error rates in N, bias ratios, SVI
# optima); benchmarks/statistical_tests.py runs them and prints their outcomes as JSON.
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15 -m slow tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

# Every benchmark in its --quick mode (each prints one JSON object as its last line).
bench-quick: $(BENCH_STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f --quick || exit 1; done

clean:
	rm -rf $(VENV) case_studies/output benchmarks/output .pytest_cache
