"""Errors raised by the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with input data or data config; the message starts with the file path or config key."""
