"""The histogram probe's record: per layer, how many gradient elements fell in each octave of |g|.

Bins are fixed and exact: ``BINS`` columns per layer, in this order

- ``ZERO``: exactly zero;
- ``BELOW``: nonzero and below ``2**LOW`` (about 9.1e-13);
- one column per octave ``[2**k, 2**(k+1))`` for ``k`` in ``LOW .. HIGH - 1`` (about 3.3 per decade;
  an octave edge is a power of two, so float16's and bfloat16's smallest normals are edges too);
- ``ABOVE``: finite and at least ``2**HIGH`` (16384);
- ``NONFINITE``: Inf or NaN.

Counts are of the true gradient: under a ``torch.amp.GradScaler`` the loss scale is divided out
(exactly, the scale being a power of two). ``below_normal`` is the other way round: the share of
nonzero elements below the smallest normal of ``dtype`` *as backward produced them* (still scaled),
because that is what underflows in a float16 backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gradscope.records.base import Matrix, ProbeRecord, Vector, empty_matrix, empty_vector, fail

LOW = -40                       # first octave edge: 2**-40, about 9.1e-13
HIGH = 14                       # last octave edge: 2**14 = 16384
OCTAVES = HIGH - LOW
ZERO, BELOW = 0, 1
FIRST_OCTAVE = 2
ABOVE = FIRST_OCTAVE + OCTAVES
NONFINITE = ABOVE + 1
BINS = NONFINITE + 1            # 58 columns per layer
SMALLEST_NORMAL = {"float16": 2.0 ** -14, "bfloat16": 2.0 ** -126}  # 6.1e-05 and 1.18e-38


def octave_edges() -> np.ndarray:
    """The finite bin edges ``2**LOW .. 2**HIGH`` (``OCTAVES + 1`` values)."""
    return np.exp2(np.arange(LOW, HIGH + 1, dtype=float))


def octave_column(exponent: int) -> int:
    """The column holding ``[2**exponent, 2**(exponent + 1))``."""
    return int(np.clip(exponent - LOW + FIRST_OCTAVE, BELOW, ABOVE))


@dataclass(frozen=True)
class HistogramRecord(ProbeRecord, probe="histogram"):
    """Sampled per-layer histograms of log2|g| (pre-clip, after the whole backward)."""

    layers: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)      # class of each layer's module ("" if unknown)
    edges: Vector = field(default_factory=octave_edges)
    every: int = 100
    steps: list[int] = field(default_factory=list)
    stride: int = 1
    samples_seen: int = 0
    counts: Matrix = field(default_factory=empty_matrix)         # kept samples x (layers * BINS)
    zero_fraction: Matrix = field(default_factory=empty_matrix)  # kept samples x layers
    below_normal: Matrix = field(default_factory=empty_matrix)   # kept samples x layers, of the nonzero
    dtype: str = "float16"
    low_precision: str | None = None
    loss_scale: Vector = field(default_factory=empty_vector)

    def validate(self, path: str) -> None:
        n, width = len(self.steps), len(self.layers)
        if self.edges.shape != (OCTAVES + 1,):
            raise fail(f"{path}.edges", f"{OCTAVES + 1} octave edges (2**{LOW} .. 2**{HIGH})", self.edges.tolist())
        if self.dtype not in SMALLEST_NORMAL:
            raise fail(f"{path}.dtype", "one of " + ", ".join(SMALLEST_NORMAL), self.dtype)
        if self.modules and len(self.modules) != width:
            raise fail(f"{path}.modules", f"{width} class names (one per layer)", self.modules)
        if not n:
            return
        for name, shape in (("counts", (n, width * BINS)), ("zero_fraction", (n, width)),
                            ("below_normal", (n, width)), ("loss_scale", (n,))):
            value = getattr(self, name)
            if value.shape != shape:
                raise fail(f"{path}.{name}", " x ".join(map(str, shape)) + " values", value.tolist())

    @property
    def smallest_normal(self) -> float:
        return SMALLEST_NORMAL[self.dtype]

    def layer_counts(self) -> np.ndarray:
        """Kept samples x layers x ``BINS`` counts."""
        return self.counts.reshape(len(self.steps), len(self.layers), BINS)

    def elements(self) -> np.ndarray:
        """Kept samples x layers: gradient elements counted (0 where a layer had no gradient)."""
        return self.layer_counts().sum(axis=2)

    def nonfinite_fraction(self) -> np.ndarray:
        """Kept samples x layers: share of elements that were Inf or NaN (NaN without a gradient)."""
        total = self.elements()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.layer_counts()[:, :, NONFINITE] / np.maximum(total, 1), np.nan)

    def worst_first(self) -> list[int]:
        """Layer indices, worst first: layers that saw NaN/Inf, then by the larger of the median
        shares of exact zeros and of values below the smallest normal; layers that never had a
        gradient last."""
        zeros, seen = finite_medians(self.zero_fraction)
        below, _ = finite_medians(self.below_normal)
        bad = np.nan_to_num(self.nonfinite_fraction(), nan=0.0).max(axis=0, initial=0.0) > 0
        score = np.fmax(np.nan_to_num(zeros, nan=-1.0), np.nan_to_num(below, nan=-1.0))
        return sorted(range(len(self.layers)), key=lambda j: (not bad[j], seen[j] == 0, -score[j], j))


def finite_medians(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``values``: the median of its finite entries (NaN if none), and their count."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    out = np.full(values.shape[1] if values.ndim == 2 else 0, np.nan)
    for j in np.flatnonzero(counts):
        out[j] = float(np.median(values[finite[:, j], j]))
    return out, counts
