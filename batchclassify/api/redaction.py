"""Keeping the API key out of text a person sees: messages, summaries, tracebacks."""

from __future__ import annotations


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret and secret in text:
        return text.replace(secret, "***")
    return text
