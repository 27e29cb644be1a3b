"""The numbers behind the findings: catalog defaults, each one settable per run."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from gradscope.errors import GradscopeError


@dataclass(frozen=True)
class Thresholds:
    """Defaults from the finding catalog. Pass a dict of overrides to ``watch(thresholds=...)``."""

    vanishing_ratio: float = 1e4      # GS203: output-side over input-side layer norm
    vanishing_floor: float = 1e-8     # GS203: a layer's mean norm below this while others are not
    exploding_norm: float = 1e3       # GS204: total norm above this
    exploding_growth: float = 1e2     # GS204: late total norm over early total norm
    dead_fraction: float = 0.5        # GS207: share of units that never activated
    update_ratio_low: float = 1e-5    # GS208
    update_ratio_high: float = 1e-1   # GS208
    hooks_growth_samples: int = 3     # GS601: consecutive growing samples
    clip_rate: float = 0.9            # GS401
    value_saturation: float = 0.1     # GS405
    input_bound_share: float = 0.3    # GS510: waiting for data over this share of the median step

    @classmethod
    def of(cls, value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
        """Accept a ``Thresholds``, a mapping of overrides, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, Thresholds):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise GradscopeError(
                f"unknown threshold(s) {unknown}: expected some of {sorted(known)}")
        converted: dict[str, Any] = {}
        for key, raw in value.items():
            kind = type(getattr(cls(), key))
            try:
                converted[key] = kind(raw)
            except (TypeError, ValueError):
                raise GradscopeError(
                    f"threshold {key}={raw!r}: expected a {kind.__name__}, such as "
                    f"{getattr(cls(), key)!r}") from None
        return replace(cls(), **converted)
