# The two commands: `make report` (the main job) and `make test`.
#   make report                                    cpu profile on the embedded phantom
#   make report PROFILE=gpu DATA=/path/to/MURA-v1.1
#   make report ONLY=02                            re-run one notebook, reusing artifacts/
#   make report TASK=abnormality PARTS=HAND,WRIST  MURA's normal/abnormal task: report/abnormality-HAND+WRIST/
PROFILE ?= cpu
TASK    ?= bodypart
PARTS   ?=
DATA    ?=
ONLY    ?=
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser report test test-all lab bench clean-artifacts

setup: $(STAMP) browser

# the browser test (tests/test_site.py) opens the rendered report in headless Chromium through chromedriver:
# installed from the distribution's packages (apt, as root or with sudo) where either is missing
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ command -v apt-get >/dev/null && $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	echo "make setup: could not install chromium and chromium-driver with apt-get; tests/test_site.py needs them" >&2

# (re)install when requirements.txt or pyproject.toml change; register the venv as the Jupyter kernel
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name xray-bayes --display-name "Python (xray-bayes)"
	touch $(STAMP)

report: setup
	$(PY) -m utils.report --profile $(PROFILE) --task $(TASK) $(if $(PARTS),--parts "$(PARTS)") \
		$(if $(DATA),--data "$(DATA)") $(if $(ONLY),--only $(ONLY))

# make test: every test but the slow end-to-end reruns (marked `slow`); make test-all (what CI runs): all of them
test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(PY) -m utils.bench all --profile $(PROFILE)

clean-artifacts:
	rm -rf artifacts/
