"""Enum members that carry a sentence saying what they mean (``member.doc``): the docs'
tables and the ``--help`` epilog are checked against, or written from, these sentences."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TypeVar, cast

_E = TypeVar("_E", bound=Enum)


def documented_member(
    cls: type[_E], make: Callable[..., object], value: object, doc: str
) -> _E:
    """For an enum's ``__new__``: the member ``make(cls, value)`` (``make`` is the mixed-in
    type's ``__new__``, e.g. ``str.__new__``) with ``value`` and ``doc``."""
    member = cast(_E, make(cls, value))
    member._value_ = value
    member.doc = doc  # type: ignore[attr-defined]  # declared by each enum as ``doc: str``
    return member
