"""Errors raised by the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with input data or data config; the message starts with the file path or config key."""


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra that installs it."""
