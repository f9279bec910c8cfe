#!/bin/sh
# Everything CI checks, after the install of the README's test command: the layer contracts
# (import-linter, contracts in pyproject.toml), formatting and lint (ruff), then the tests, in a new
# random order each run (pytest-randomly prints the seed; `--randomly-seed=N` repeats that order).
# Arguments go to pytest: `sh scripts/check.sh tests/lm -x`.
set -e
cd "$(dirname "$0")/.."
.venv/bin/lint-imports
.venv/bin/ruff format --check src tests bench
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest "$@"
