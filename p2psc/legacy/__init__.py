"""INSECURE LEGACY: protocol version 0 of the original C++ p2psc library.

Everything in this package exists only so that unmodified clients of the original C++ library
(and Python programs that must pair with them) can use our mediator. It is deliberately kept
apart from the version 1 code paths (:mod:`p2psc.wire`, :mod:`p2psc.keys`) and must never be
used for anything new. Its weaknesses are inherited, not chosen, and are listed in
``spec/legacy.md``: RSA PKCS#1 v1.5 encryption (padding-oracle prone), nonces bound to no
context (a challenge can be relayed), JSON messages with no length prefix and no delimiter.

Modules: :mod:`p2psc.legacy.codec` (the JSON messages and an incremental decoder),
:mod:`p2psc.legacy.crypto` (RSA keys and nonce encryption).
"""

from __future__ import annotations

__all__: list[str] = []
