"""Domain sources from the workflow config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tikmix.data.sources import DomainSource

SOURCE_KEYS = ("paths", "text_field", "dtype")


def domain_sources(domains: Mapping[str, Mapping[str, Any]]) -> dict[str, DomainSource]:
    """``config["domains"]`` → DomainSource per domain (keys for other stages are ignored)."""
    return {
        name: DomainSource.from_config(name, {k: spec[k] for k in SOURCE_KEYS if k in spec})
        for name, spec in domains.items()
    }
