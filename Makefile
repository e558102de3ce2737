# EditScope: `make run` serves the dashboard, `make test` runs the tests. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
MODEL  ?= gemma-3-270m
EDITSCOPE_HOME ?= $(HOME)/.cache/editscope
export EDITSCOPE_HOME

.PHONY: install prepare run test test-fast bench clean-cache

install: $(STAMP)

# Reinstalls only when a requirements file changed.
$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@

# Dequantises the default model once, then computes what the first edit would wait for: ROME's layer
# statistics (from the bundled WikiText-2 excerpt, data/corpus/) and the impact scan's unedited side
# (progress bars; a second run finds them cached).
prepare: install
	@test -f $(EDITSCOPE_HOME)/models/$(MODEL)/editscope.json || $(PY) -m editcore prepare $(MODEL)
	$(PY) -m editcore warmup $(MODEL)

run: prepare
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not integration and not browser"

bench: prepare
	$(PY) -m editcore bench --out reports

clean-cache:
	rm -rf $(EDITSCOPE_HOME)/results
