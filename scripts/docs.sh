#!/usr/bin/env bash
# Build the documentation site into build/site/ and check it (mkdocs build --strict: a broken
# link or anchor fails). Open build/site/index.html in a browser: it works from the file system,
# with no network (Mermaid is bundled). `bash scripts/docs.sh serve` serves it on
# http://127.0.0.1:8000 instead and rebuilds on every change.
export P2PSC_EXTRAS="${P2PSC_EXTRAS:-test,speed,docs}"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
export NO_MKDOCS_2_WARNING=1
if [ "${1:-}" = serve ]; then
  exec "$VENV/bin/mkdocs" serve --strict -a 127.0.0.1:8000
fi
"$VENV/bin/mkdocs" build --strict "$@"
echo "built: file://$ROOT/build/site/index.html"
