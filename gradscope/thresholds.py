"""The numbers behind the findings: catalog defaults, each one settable per run."""
from __future__ import annotations

import math
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
    clip_harm_factor: float = 0.01    # GS401 is a warning when max_norm is below this share of the median norm
    value_saturation: float = 0.1     # GS405
    input_bound_share: float = 0.3    # GS510: waiting for data over this share of the median step
    input_bound_min_ms: float = 2.0   # GS510: ...and at least this long (30% of 0.7 ms is no bottleneck)

    lr_collapse: float = 1e3          # GS308: a learning rate below its peak divided by this...
    lr_collapse_share: float = 0.1    # GS308: ...for more than this share of the recorded steps

    # Reference runs (gradscope.reference). Bands are in log10 for norms, ratios and times.
    reference_tolerance: float = 4.0     # GS801, GS803: one reference: a band from its value / 4 to x 4 (two
                                         # seeds of a healthy run differ by up to about 2x at a step)
    reference_margin: float = 2.0        # GS801, GS803, GS810: two or more: their spread, widened on each side
                                         # by that spread again, and by at least this factor
    reference_time_factor: float = 2.0   # GS810: one reference: a phase's step time from its time / 2 to x 2
    reference_loss_share: float = 0.5    # GS802: the loss band: the references' range, widened by this share of
                                         # their starting loss
    reference_lr_factor: float = 1.05    # GS805, GS806: a learning rate more than 5% off every reference's
    reference_clip_rate: float = 0.3     # GS804: a clip rate (last 50 calls) 30 points outside the references'

    def __post_init__(self) -> None:
        # NaN compares false with everything, so a NaN threshold would turn its check off without
        # a word. Infinity stays allowed: it is how a caller asks for no limit, on purpose.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isnan(value):
                raise GradscopeError(
                    f"threshold {f.name}=nan: expected a number, such as {f.default!r}; NaN "
                    "compares false with everything, so the check would never fire (to turn it "
                    "off on purpose, give inf)")

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
            except (TypeError, ValueError, OverflowError):
                raise GradscopeError(
                    f"threshold {key}={raw!r}: expected {'an' if kind is int else 'a'} {kind.__name__}, such as "
                    f"{getattr(cls(), key)!r}") from None
        return replace(cls(), **converted)

