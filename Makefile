# EditScope: `make run` serves the dashboard, `make test` runs the tests. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
MODEL  ?= gemma-3-270m
EDITSCOPE_HOME ?= $(HOME)/.cache/editscope
export EDITSCOPE_HOME
# Layer statistics need a text corpus; offline, a local WikiText sample beats sampling text from the model
# (minutes on a CPU). Use the one beside the checkout when it is there, unless the user set their own.
# (Only for run and bench: tests pick their corpora explicitly.)
WIKITEXT := $(abspath ../shared/data/wikitext/wiki.test.raw)
ifeq ($(origin EDITSCOPE_STATS_CORPUS),undefined)
ifneq ($(wildcard $(WIKITEXT)),)
run bench: export EDITSCOPE_STATS_CORPUS := $(WIKITEXT)
endif
endif

.PHONY: install prepare run test test-fast bench clean-cache

install: $(STAMP)

# Reinstalls only when a requirements file changed.
$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@

# Dequantises the default model once (progress bar); a prepared model is not touched again.
prepare: install
	@test -f $(EDITSCOPE_HOME)/models/$(MODEL)/editscope.json || $(PY) -m editcore prepare $(MODEL)

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
