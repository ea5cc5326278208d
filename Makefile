# Two commands on a fresh Debian 12 machine:  make run   |   make test
# Each installs what is missing first (Debian packages, Kafka jars, the Python venv);
# a second run downloads nothing.

PYTHON        ?= python3
VENV          := .venv
BIN           := $(VENV)/bin

.PHONY: install system python run test lint down clean

install: system python

system:
	@bash deploy/install-debian.sh   # Debian packages + pinned Kafka jars (see core/settings.py)

python: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@echo "== Python environment ($(VENV))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

run: install
	@$(BIN)/tawag up

# Under `make test` a skipped test is a failure: the project installed everything it needs
# (tests/conftest.py). The slowest tests are listed at the end, to show where time goes.
test: install
	@$(BIN)/ruff check .
	@TAWAG_TESTS_REQUIRE_ALL=1 $(BIN)/pytest --durations=25

lint: python
	@$(BIN)/ruff check .

down:
	@$(BIN)/tawag down

clean: down
	rm -rf var/chdb var/kafka var/faust var/logs var/run var/recordings
