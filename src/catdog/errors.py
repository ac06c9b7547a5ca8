"""Errors a user can act on. The CLI maps UsageProblem to exit 2 and other CatdogErrors to 1."""

from __future__ import annotations


class CatdogError(Exception):
    """Base of every error catdog raises on purpose."""


class UsageProblem(CatdogError, ValueError):
    """Bad usage or unreadable input: the user can fix the call."""
