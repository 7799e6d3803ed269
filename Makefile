# One entry point per chore, for people and CI alike.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
PG_ADMIN_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres

.PHONY: install check test test-sqlite test-postgresql soak demo bench clean

install: $(STAMP)

# Rebuilt when missing or when the pinned dependencies change. The lock holds third-party packages; our
# two distributions, the SDK (sdk/, voicemon-client) and the server that pins it, come from this tree.
$(STAMP): pyproject.toml sdk/pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e ./sdk -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Formatting, lint, types, and the package layering (which package may import which).
check: $(STAMP)
	$(BIN)/ruff format --check src sdk tests bench
	$(BIN)/ruff check src sdk tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_layering.py

# The whole suite, once on SQLite and once on PostgreSQL (each run in a database of its own).
test: test-sqlite test-postgresql

test-sqlite: check
	VOICEMON_TEST_DB=sqlite $(BIN)/pytest -q -p no:cacheprovider

test-postgresql: check
	VOICEMON_TEST_DB=postgresql VOICEMON_TEST_PG_ADMIN_URL=$(PG_ADMIN_URL) $(BIN)/pytest -q -p no:cacheprovider

# The long versions of the survival tests (SPEC 20): 24 kill -9 trials on each database, three simulated
# days of two servers and a worker on one PostgreSQL, the outage and the aggregation crash (minutes).
SOAK_TESTS := tests/e2e/test_survival.py tests/integration/test_aggregation_crash.py
soak: $(STAMP)
	VOICEMON_SOAK=1 VOICEMON_TEST_DB=sqlite $(BIN)/pytest -q -p no:cacheprovider $(SOAK_TESTS)
	VOICEMON_SOAK=1 VOICEMON_TEST_DB=postgresql VOICEMON_TEST_PG_ADMIN_URL=$(PG_ADMIN_URL) \
		$(BIN)/pytest -q -p no:cacheprovider $(SOAK_TESTS) tests/e2e/test_replicas.py \
		tests/e2e/test_database_outage.py

demo: $(STAMP)
	PORT=$(PORT) $(BIN)/voicemon demo --port $(PORT)

# Full run (<= 15 min) or QUICK=1 (<= 3 min); writes bench-results.json.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
