# The two set-up commands of the README: `make demo` and `make test`.
# Each creates the virtual environment when it is missing (only python3 is needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test venv clean

$(BIN)/edge-derm: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the editable install's one setuptools notice (converters/ and benchmarks/ are mapped into edge_derm, so it
	# uses a meta path finder) is for packagers, not users; a regular `pip install .` prints no warning at all
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $@

venv: $(BIN)/edge-derm

demo: venv
	$(BIN)/edge-derm demo --out $(DEMO_OUT) --force

test: venv
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(DEMO_OUT)
