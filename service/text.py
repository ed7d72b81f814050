"""How error messages repeat what a user sent: never more than a bounded excerpt of it, so a
huge name or body cannot make a huge answer (or a huge log line)."""

from __future__ import annotations

ECHO_CHARS = 120
"""Most characters of a user's string an error message repeats (a longer one is cut, marked `...`)."""


def excerpt(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` as an error message may echo it: at most `limit` characters, its middle cut."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[len(text) - half :]}"
