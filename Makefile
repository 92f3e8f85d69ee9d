# The two set-up commands of the README: `make demo` and `make test`.
# Each creates the virtual environment when it is missing (only python3 is needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

CLIENTS ?= .venv-clients

.PHONY: demo test venv clients clean

$(BIN)/edge-derm: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# setuptools' one editable-install notice (folders named like the package may shadow it) is for packagers,
	# not users; a regular `pip install .` prints no warning at all
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $@

venv: $(BIN)/edge-derm

# The standard on-device clients, in an interpreter of their own: MediaPipe Tasks (ImageClassifier)
# pins absl-py ~= 2.3 and tensorflow-model-optimization ~= 1.2, so they cannot share one environment.
# tests/test_standard_metadata.py runs it on every converted variant and skips when it is missing.
$(CLIENTS)/bin/python:
	$(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install --quiet "mediapipe==0.10.30" pillow \
	  || { rm -rf $(CLIENTS); echo "make: could not install MediaPipe; the standard-client tests will skip"; }

clients: $(CLIENTS)/bin/python

demo: venv
	$(BIN)/edge-derm demo --out $(DEMO_OUT) --force

test: venv clients
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(CLIENTS) $(DEMO_OUT)
