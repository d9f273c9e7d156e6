"""The one exception type of :mod:`tikmix.data`.

Every problem with user-supplied data (a glob that matches nothing, a malformed jsonl line, a
missing text field, an out-of-range answer index, mixture weights that do not sum to one, ...)
raises :class:`DataError` with a message that names the domain, file, line or key at fault, so the
workflow can stop with an actionable message before any expensive stage starts.
"""

from __future__ import annotations


class DataError(ValueError):
    """Invalid or unreadable input data; the message names what is wrong and where."""
