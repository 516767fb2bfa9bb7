#!/usr/bin/env bash
# The whole test suite: lint, format check, strict typing, then pytest (all markers, including
# the slow exhaustive models and, when root, the network-namespace NAT tests).
# Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "== ruff check"; "$VENV/bin/ruff" check p2psc models tests
echo "== ruff format --check"; "$VENV/bin/ruff" format --check p2psc models tests
echo "== mypy --strict p2psc"; "$VENV/bin/mypy" --strict p2psc
echo "== pytest"; exec "$VENV/bin/python" -m pytest "$@"
