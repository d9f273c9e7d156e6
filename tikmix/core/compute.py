"""The compute record: tokens processed and floating-point operations spent.

Every job writes what it did itself as ``compute: {tokens, flops}`` (in the attributes of the
store it writes, or a top-level key of its JSON document) and, where it derives from other
jobs' outputs, ``total_compute``: its own record plus theirs. This class is the only way a
record is made, added, read and parsed (:meth:`ComputeRecord.read`, the one reader of a
store's attributes or a JSON document), so every account (table 1's last row, the report's FLOP
cross-check) sums the same numbers. FLOPs are estimated by :mod:`tikmix.models.flops`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class ComputeRecordError(ValueError):
    """A ``compute`` record is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class ComputeRecord:
    """Tokens processed and floating-point operations spent by one or more jobs."""

    tokens: int = 0
    flops: float = 0.0

    def __add__(self, other: ComputeRecord) -> ComputeRecord:
        return ComputeRecord(self.tokens + other.tokens, self.flops + other.flops)

    @classmethod
    def total(cls, *records: ComputeRecord | Mapping) -> ComputeRecord:
        """The sum of ``records`` (records or their dicts): a stage's own cost plus upstream."""
        total = cls()
        for record in records:
            total = total + (record if isinstance(record, cls) else cls.parse(record))
        return total

    def to_dict(self) -> dict[str, float]:
        """``{"tokens": int, "flops": float}`` as written into stores and documents."""
        return {"tokens": int(self.tokens), "flops": float(self.flops)}

    @classmethod
    def parse(cls, value: object, where: str = "compute record") -> ComputeRecord:
        """A record from its dict; raises :class:`ComputeRecordError` naming ``where``."""
        if not isinstance(value, Mapping):
            raise ComputeRecordError(f"{where}: 'compute' must be a mapping with tokens and flops")
        numbers = {}
        for key in ("tokens", "flops"):
            number = value.get(key)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ComputeRecordError(f"{where}: compute.{key} is missing or not a number")
            if not math.isfinite(number) or number < 0:
                raise ComputeRecordError(
                    f"{where}: compute.{key} must be finite and >= 0, not {number}"
                )
            numbers[key] = number
        tokens = numbers["tokens"]
        return cls(int(tokens) if float(tokens).is_integer() else tokens, float(numbers["flops"]))

    @classmethod
    def read(cls, holder: object, where: str, key: str = "compute") -> ComputeRecord:
        """The record under ``key`` (``compute`` or ``total_compute``) of a store's attributes
        or a JSON document; raises :class:`ComputeRecordError` naming ``where``."""
        if not isinstance(holder, Mapping) or key not in holder:
            raise ComputeRecordError(f"{where}: no '{key}' record")
        return cls.parse(holder[key], where)
