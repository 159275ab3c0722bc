"""Errors raised by the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with input data or data config; the message starts with the file path or config key."""


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra that installs it."""


class StorageError(OSError):
    """A file of the run could not be written (disk full, read-only file system, no permission); the
    message names the file (and the free space). A user error: one line, exit 2, like a usage error."""


class PeerFailed(Exception):
    """Another process of the same distributed run failed its start and reports it (one line for a user
    error); this process exits with status 2 and prints nothing."""
