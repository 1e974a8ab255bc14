"""The registry's rejections: defined in the broker's one exception tree (broker/errors.py)."""

from __future__ import annotations

from broker.errors import InvalidArguments, InvalidToolSchema, ToolQuarantined

__all__ = ["InvalidArguments", "InvalidToolSchema", "ToolQuarantined"]
