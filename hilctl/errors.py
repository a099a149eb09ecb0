"""Exceptions that carry a message a person can act on."""

from __future__ import annotations


class HilctlError(Exception):
    """Base class of every error hilctl raises on purpose."""


class ConfigError(HilctlError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    The message names the field (``section.key``) and what is allowed.
    """


class BackendError(HilctlError):
    """A backend name is unknown or the backend could not be opened."""
