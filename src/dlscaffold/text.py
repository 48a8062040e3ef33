"""Text from files and names, made safe to show on a terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` safe to print on any terminal: undecodable bytes as U+FFFD, control characters escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(char if char.isprintable() or char == "\n" else repr(char)[1:-1] for char in text)
