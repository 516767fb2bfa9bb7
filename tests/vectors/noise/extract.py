"""Rebuild the vector subsets in this directory from the upstream vector files.

Usage: python tests/vectors/noise/extract.py UPSTREAM.txt OUT.json SOURCE-NOTE

Keeps the entries whose protocol name is ``Noise_<P>_25519_ChaChaPoly_SHA256`` for a pattern
``<P>`` that p2psc.noise implements (no PSK, no fallback), unchanged, in upstream order. The
entries are data published for interoperability testing; this script is how they were selected.
"""

from __future__ import annotations

import json
import sys

from p2psc.noise import PATTERNS, protocol_name


def main() -> None:
    upstream, out, note = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(upstream, encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    wanted = {protocol_name(p).decode() for p in PATTERNS}
    kept = [v for v in vectors if v["protocol_name"] in wanted and not v.get("init_psks")]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": note, "vectors": kept}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{out}: {len(kept)} of {len(vectors)} entries")


if __name__ == "__main__":
    main()
