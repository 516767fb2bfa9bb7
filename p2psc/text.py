"""Text from the network, made safe to show on a terminal or to write into a log.

Why: reason texts of AdvertiseAbort/AdvertiseRetry, addresses, legacy JSON strings and error
messages are chosen by whoever is on the other end of a connection (a malicious mediator, a
flooding client). Written raw, an ESC sequence clears the operator's screen or forges a log
line ("connected ... verified"), and a newline splits one log record into two. Every place
that shows such text passes it through :func:`printable` first.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories escaped: controls (C0, DEL, C1: ESC, CR, LF, BEL...), format characters
(bidirectional overrides such as U+202E that reorder what a reader sees, zero-width ones),
surrogates, private use, unassigned, and the line/paragraph separators."""

_ASCII_SAFE = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, *, limit: int | None = 4096) -> str:
    """``text`` (``str()`` of anything, ``bytes`` decoded as UTF-8 with replacement) with every
    control, format and other invisible character escaped as ``\\xNN``/``\\uNNNN``, and a
    backslash doubled so an escape in the output is never ambiguous with one from the input.

    ``limit`` caps the length of the result (a log line must not be a megabyte because a
    peer said so); the cut is marked with ``...``. ``None``: no cap.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit]
        cut = True
    else:
        cut = False
    if all(char in _ASCII_SAFE for char in text):  # the common case: nothing to escape
        result = text
    else:
        parts: list[str] = []
        for char in text:
            if char in _ASCII_SAFE:
                parts.append(char)
            elif char == "\\":
                parts.append("\\\\")
            elif char < "\x80" or unicodedata.category(char) in _UNSAFE_CATEGORIES:
                parts.append(_escape(char))
            else:
                parts.append(char)
        result = "".join(parts)
    return result + "..." if cut else result
