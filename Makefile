# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(PY)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two test processes, whole files to each (module fixtures are built once); the session's
# pre-trained encoder is trained by one and restored by the other (tests/conftest.py).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/preprocess_bench.py
	$(PY) benchmarks/encoder_bench.py
	$(PY) benchmarks/embedding_bench.py
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/serving_bench.py

clean:
	rm -rf $(VENV) demo_out bench_out *.egg-info
