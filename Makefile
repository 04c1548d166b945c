# User-facing targets: `make demo` and `make test`. Both first bring the environment (.venv) up to date;
# that step reruns only when one of its inputs changed, so a second run starts at once.
SHELL := /bin/bash

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.samwise-stamp

# What the environment is built from: requirements, packaging, the ROS package and its messages.
ENV_INPUTS := requirements.txt setup.py setup.cfg package.xml CMakeLists.txt \
              $(wildcard msg/*.msg) scripts/samwise_node scripts/samwise_player tools/setup_env.sh

# ROS 2: find this package's share directory in .venv, and keep DDS discovery on this machine.
ROS_ENV := AMENT_PREFIX_PATH="$(CURDIR)/$(VENV)$${AMENT_PREFIX_PATH:+:$$AMENT_PREFIX_PATH}"

# Extra arguments: make test PYTEST_ARGS="-k cme", make demo DEMO_ARGS="--help".
PYTEST_ARGS ?=
DEMO_ARGS   ?=
# The test files run on this many pytest-xdist workers (each file on one worker: its module fixtures,
# such as a node, are shared by its tests); 1 runs them in this process.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help demo test venv clean distclean

help:
	@echo "make demo   run the end-to-end demo (output in output/demo/)"
	@echo "make test   run the test suite"

demo: venv
	$(ROS_ENV) ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} \
	  $(VENV)/bin/samwise-demo $(DEMO_ARGS)

# Tests never let DDS leave the machine, and run in a ROS domain of their own unless one is given.
test: venv
	$(ROS_ENV) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	  ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( RANDOM % 100 + 1 ))} \
	  $(PY) -m pytest -q $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) test $(PYTEST_ARGS)

# Internal: the environment (tools/setup_env.sh does the work and is idempotent).
venv: $(STAMP)

$(STAMP): $(ENV_INPUTS)
	bash tools/setup_env.sh
	@touch $@

clean:
	rm -rf build/ros

distclean: clean
	rm -rf $(VENV)
