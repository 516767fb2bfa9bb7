#!/usr/bin/env bash
# The whole test suite: lint, format check, strict typing, then pytest (all markers, including
# the slow exhaustive models and, when root, the network-namespace NAT tests).
# Extra arguments go to pytest.
# The docs extra is needed by tests/test_docs_site.py (mkdocs build --strict, the browser test).
export P2PSC_EXTRAS="${P2PSC_EXTRAS:-test,speed,docs,redis}"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "== ruff check"; "$VENV/bin/ruff" check p2psc models tests scripts
echo "== ruff format --check"; "$VENV/bin/ruff" format --check p2psc models tests scripts
echo "== mypy --strict p2psc (with models/ in place as p2psc.models)"
# The wheel maps models/ to p2psc.models; mypy cannot follow that mapping from the source tree,
# so it checks a tree of links that has it (build/ is ignored by git).
typecheck="$ROOT/build/typecheck"
rm -rf "$typecheck" && mkdir -p "$typecheck/p2psc"
ln -s "$ROOT"/p2psc/* "$typecheck/p2psc/" && ln -s "$ROOT/models" "$typecheck/p2psc/models"
(cd "$typecheck" && "$VENV/bin/mypy" --strict --config-file "$ROOT/pyproject.toml" \
  --cache-dir "$ROOT/.mypy_cache" p2psc)
echo "== pytest"; exec "$VENV/bin/python" -m pytest "$@"
