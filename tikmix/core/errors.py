"""Exceptions that name a user's mistake, shared by the modules that check a study."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid workflow configuration; the message names the offending key."""
