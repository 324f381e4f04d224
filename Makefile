# The two commands a newcomer runs: `make demo` and `make test`. Both build .venv when missing.
# (The quiet environment, no telemetry and no usage stats, is set by the loopstudy CLI and by
# tests/conftest.py: study.QUIET_ENV.)
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test test-fast venv bench clean

venv: $(VENV_STAMP)

# torch is installed first, from its own pin, and every later install is constrained by it,
# so nothing can pull a different (CUDA, multi-GB) torch.
$(VENV_STAMP): requirements-torch.txt requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements-torch.txt
	$(PY) -m pip install -q -r requirements.txt -c requirements-torch.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# A small real scientific study end to end: s=1 vs s=4 on the CPU preset, each with its own
# learning-rate search, then shared fresh seeds (Ray Tune + Optuna + MLflow), into a fresh
# results folder each time; prints the answer (or why it names no winner) and the UI command.
demo: venv
	$(PY) -m study.cli run study/studies/dilation_cpu.yaml --results results/dilation_cpu-$$(date +%Y%m%d-%H%M%S)

# every tier this machine can run (the cluster tier needs root; it is named when skipped), three
# test files at a time; PYTEST_ARGS selects, e.g. make test PYTEST_ARGS="-m cluster"
test: venv
	$(PY) -m pytest -n 3 --dist loadfile $(PYTEST_ARGS)

# the fast tier alone: no Ray, no MLflow server (seconds to a minute)
test-fast: venv
	$(PY) -m pytest -m "not service and not cluster"

bench: venv
	$(PY) bench/train_speed.py

clean:
	rm -rf .venv runs results
