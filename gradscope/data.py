"""Training data for ``gradscope run``: generated offline from a seed, or read from a local folder.

Specs understood by :func:`load_data`:

- ``glyphs`` (the default): digits and letters rendered from the fonts that matplotlib ships
  (DejaVu Sans, Sans Mono, Serif and STIX, in their regular, bold and italic cuts), each sample
  randomly shifted, rotated, scaled, sheared, thickened or thinned, and noised. Class ``k`` is the
  ``k``-th character of :data:`GLYPH_ALPHABET`. Past 62 classes a class is a pair of characters
  drawn side by side at reduced size (class ``k`` is ``ALPHABET[k // 62] + ALPHABET[k % 62]``), so up
  to ``62 * 62`` classes fit. With more than one channel, the glyph and its background get random
  colours, one light and one dark. Both splits are standardised with the train split's per-channel
  mean and std. Shapes that are not images (not ``(C, H, W)`` with ``H, W >= 8``) get the
  ``synthetic`` task instead. With the defaults (12,000 train and 2,000 test images of 1x28x28),
  one epoch of a small CNN (two 5x5 convolutions, two linear layers, Adam 1e-3, batch 64) reaches
  about 98% test accuracy, a linear model on the pixels about 85%.
- ``synthetic``: Gaussian class clusters (two per class) in a low-dimensional latent space, embedded
  in the input shape by a random linear map plus a little noise.
- ``fake``: torchvision's ``FakeData`` (noise images, random labels) drawn as one grey image per
  sample and reshaped to the input shape, values in ``[0, 1]``.
  Nothing to learn; for smoke tests.
- ``mnist:PATH``, ``fashionmnist:PATH``, ``cifar10:PATH``: torchvision datasets read from a local
  folder (never downloaded), normalised with the usual per-channel mean and std.

Everything is generated in memory in a few seconds; nothing is cached on disk. Train and test
splits are separate random draws from the same distribution, and both depend only on the seed
(and on the matplotlib fonts, which are part of matplotlib, not of the system).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from gradscope.errors import GradscopeError

GLYPH_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""Class ``k`` of the ``glyphs`` data is ``GLYPH_ALPHABET[k]`` (pairs of characters past 62 classes)."""

MAX_GLYPH_CLASSES = len(GLYPH_ALPHABET) ** 2

DEFAULT_SPEC = "glyphs"
SPECS = ("glyphs", "synthetic", "fake", "mnist:PATH", "fashionmnist:PATH", "cifar10:PATH")

DEFAULT_TRAIN_SIZE = 12_000
DEFAULT_TEST_SIZE = 2_000
# Default sizes shrink so that train + test inputs stay under this many bytes (float32).
DEFAULT_MEMORY_BUDGET = 384 * 2**20
FAKE_MAX_DEFAULT = (2_000, 500)  # noise has nothing to learn: no point in making much of it

# Bundled with matplotlib (so the data does not depend on the system's fonts), in a fixed order.
GLYPH_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)

_MIN_IMAGE_SIDE = 8
_MAX_TEMPLATE_SIDE = 96
_CHUNK = 4096  # samples augmented at once: bounds the memory of the sampling grids


@dataclass(frozen=True)
class GlyphAugment:
    """Ranges of the random per-sample distortions of the ``glyphs`` data.

    Angles in degrees; shifts as a fraction of the shorter image side; ``stroke`` is the range of
    the threshold that turns the blurred glyph into ink (lower = thicker strokes).
    """

    rotation: float = 8.0
    scale: tuple[float, float] = (0.85, 1.05)
    aspect: float = 0.10
    shear: float = 0.10
    shift: float = 0.08
    stroke: tuple[float, float] = (0.25, 0.65)
    noise: tuple[float, float] = (0.0, 0.15)
    ink: tuple[float, float] = (0.7, 1.0)
    background: tuple[float, float] = (0.0, 0.15)


DEFAULT_AUGMENT = GlyphAugment()


class ClassificationData(TensorDataset):
    """A labelled dataset held as two tensors, so indexing and DataLoader batching are cheap.

    ``dataset[i]`` is ``(float32 tensor of the input shape, int64 scalar label)``.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                 description: str) -> None:
        super().__init__(inputs, labels)
        self.inputs = inputs
        self.labels = labels
        self.class_names = tuple(class_names)
        self.description = description

    def __repr__(self) -> str:
        return (f"ClassificationData({len(self)} samples of {_shape_text(tuple(self.inputs.shape[1:]))}, "
                f"{len(self.class_names)} classes: {self.description})")


# ---------------------------------------------------------------------------------- public API

def load_data(
    spec: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
) -> tuple[ClassificationData, ClassificationData]:
    """Build or read the train and test sets that ``spec`` names, shaped for a model.

    Args:
        spec: one of :data:`SPECS`, e.g. ``"glyphs"`` or ``"mnist:/data"``.
        input_shape: the shape of one input without the batch dimension, e.g. ``(1, 28, 28)``.
        num_classes: the number of outputs of the classifier.
        seed: the generated data (and the subset of a local dataset) depend only on this.
        train_size, test_size: number of samples; ``None`` takes :func:`default_sizes` (or the
            whole local dataset).

    Returns:
        ``(train, test)``, two :class:`ClassificationData`.

    Raises:
        GradscopeError: unknown spec, bad arguments, or a local dataset that is missing or does
            not fit the model.
    """
    shape = _check_shape(input_shape)
    classes = _check_int("num_classes", num_classes, minimum=2)
    seed = _check_int("seed", seed, minimum=0)
    train_n = None if train_size is None else _check_int("train_size", train_size, minimum=1)
    test_n = None if test_size is None else _check_int("test_size", test_size, minimum=1)
    kind, path = _parse_spec(spec)

    if kind in _LOCAL:
        return _load_local(kind, path, shape, classes, seed, train_n, test_n)

    default_train, default_test = default_sizes(shape)
    if kind == "fake":
        default_train = min(default_train, FAKE_MAX_DEFAULT[0])
        default_test = min(default_test, FAKE_MAX_DEFAULT[1])
    n_train = default_train if train_n is None else train_n
    n_test = default_test if test_n is None else test_n

    if kind == "fake":
        return _fake(shape, classes, seed, n_train, n_test)
    if kind == "glyphs" and is_image_shape(shape):
        if classes > MAX_GLYPH_CLASSES:
            raise GradscopeError(
                f"the glyphs data has at most {MAX_GLYPH_CLASSES} classes (pairs of the 62 characters "
                f"0-9, A-Z, a-z), the model has {classes} outputs; use spec 'synthetic' or a dataset "
                f"folder for a model with that many classes")
        train = glyph_dataset(shape, classes, n_train, seed=seed, split="train")
        test = glyph_dataset(shape, classes, n_test, seed=seed, split="test")
        return _standardise(train, test)
    return tuple(  # type: ignore[return-value]
        synthetic_dataset(shape, classes, n, seed=seed, split=split)
        for split, n in (("train", n_train), ("test", n_test)))


def describe(spec: str, input_shape: Sequence[int] | None = None) -> str:
    """One line saying what ``spec`` is, for reports; pass ``input_shape`` to resolve ``glyphs``."""
    kind, path = _parse_spec(spec)
    if kind in _LOCAL:
        info = _LOCAL[kind]
        return f"{info.title} read from the local folder {path} (normalised, not downloaded)"
    if kind == "fake":
        return "torchvision FakeData: random noise inputs with random labels (nothing to learn)"
    synthetic = ("synthetic Gaussian class clusters (two per class) embedded in the input shape "
                 "by a random linear map, generated from the seed")
    if kind == "synthetic" or (input_shape is not None and not is_image_shape(tuple(input_shape))):
        return synthetic
    text = ("glyphs: digits and letters rendered from matplotlib's DejaVu and STIX fonts with random "
            "shift, rotation, scale, shear, stroke width and noise, generated from the seed")
    return text if input_shape is not None else text + " (class clusters for non-image shapes)"


def default_sizes(input_shape: Sequence[int]) -> tuple[int, int]:
    """Default ``(train_size, test_size)``: 12,000 and 2,000, fewer for inputs too big to hold."""
    per_sample = 4 * math.prod(input_shape)
    fits = DEFAULT_MEMORY_BUDGET // max(per_sample, 1)
    total = DEFAULT_TRAIN_SIZE + DEFAULT_TEST_SIZE
    if fits >= total:
        return DEFAULT_TRAIN_SIZE, DEFAULT_TEST_SIZE
    test = max(fits * DEFAULT_TEST_SIZE // total, 16)
    return max(fits - test, 64), test


def is_image_shape(input_shape: Sequence[int]) -> bool:
    """True for ``(C, H, W)`` with ``H, W >= 8``: the shapes the glyphs are drawn for."""
    return len(input_shape) == 3 and min(input_shape[1:]) >= _MIN_IMAGE_SIDE


# ---------------------------------------------------------------------------------- glyphs

def glyph_fonts() -> list[str]:
    """Paths of the matplotlib-bundled font files the glyphs are rendered from, in a fixed order."""
    import matplotlib  # lazily: `import gradscope` must not import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [str(folder / name) for name in GLYPH_FONT_FILES if (folder / name).is_file()]
    if not found:
        raise GradscopeError(
            f"found none of matplotlib's bundled fonts in {folder} (expected e.g. DejaVuSans.ttf); "
            f"reinstall matplotlib (`pip install --force-reinstall matplotlib`) or use spec 'synthetic'")
    return found


def render_glyphs(chars: str, side: int) -> torch.Tensor:
    """Render each character in each font of :func:`glyph_fonts` on a ``side`` x ``side`` canvas.

    Characters share one font size and one baseline, so lower case stays smaller than upper case;
    each is centred horizontally. White ink on black, values in ``[0, 1]``.

    Returns:
        float32 tensor ``(fonts, len(chars), side, side)``.
    """
    from matplotlib.ft2font import FT2Font

    fonts = glyph_fonts()
    em = 0.8 * side  # pixels per em: caps are ~0.73 em tall, descenders ~0.24 em
    baseline = round(0.5 * side + 0.36 * em)
    out = np.zeros((len(fonts), len(chars), side, side), dtype=np.float32)
    for i, path in enumerate(fonts):
        font = FT2Font(path)
        for j, char in enumerate(chars):
            if font.get_char_index(ord(char)) == 0:
                raise GradscopeError(f"the font {Path(path).name} has no glyph for {char!r}; "
                                     f"reinstall matplotlib or use spec 'synthetic'")
            font.set_size(em, 72)  # at 72 dpi one point is one pixel
            font.set_text(char, 0.0)
            font.draw_glyphs_to_bitmap(antialiased=True)
            bitmap = np.asarray(font.get_image(), dtype=np.float32) / 255.0
            h, w = bitmap.shape
            top = baseline - (h - font.get_descent() // 64)
            left = (side - w) // 2
            _paste(out[i, j], bitmap, top, left)
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=1)
def _cached_templates(chars: str, side: int) -> torch.Tensor:
    """:func:`render_glyphs`, remembered in memory so the test split reuses the train split's."""
    return render_glyphs(chars, side)


def _paste(canvas: np.ndarray, bitmap: np.ndarray, top: int, left: int) -> None:
    """Copy ``bitmap`` onto ``canvas`` at ``(top, left)``, cropping whatever falls outside."""
    h, w = bitmap.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if r1 > r0 and c1 > c0:
        inside = bitmap[r0 - top:r1 - top, c0 - left:c1 - left]
        canvas[r0:r1, c0:c1] = np.maximum(canvas[r0:r1, c0:c1], inside)


def glyph_class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the glyph classes: single characters up to 62 classes, character pairs past that."""
    a = GLYPH_ALPHABET
    if num_classes <= len(a):
        return tuple(a[:num_classes])
    return tuple(a[k // len(a)] + a[k % len(a)] for k in range(num_classes))


def glyph_dataset(
    input_shape: Sequence[int],
    num_classes: int,
    size: int,
    *,
    seed: int,
    split: str,
    augment: GlyphAugment = DEFAULT_AUGMENT,
) -> ClassificationData:
    """``size`` randomly distorted glyph images of ``input_shape`` ``(C, H, W)``, balanced over classes.

    ``split`` (``"train"`` or ``"test"``) selects an independent random stream for the same seed.
    Values are in ``[0, 1]``; :func:`load_data` standardises them afterwards.
    """
    c, h, w = input_shape
    gen = _generator(seed, "glyphs", split)
    side = min(max(2 * max(h, w), 32), _MAX_TEMPLATE_SIDE)
    names = glyph_class_names(num_classes)
    pairs = num_classes > len(GLYPH_ALPHABET)
    chars = GLYPH_ALPHABET if pairs else GLYPH_ALPHABET[:num_classes]
    templates = _cached_templates(chars, side)  # (fonts, glyphs, side, side), shared: not modified
    n_fonts = templates.shape[0]
    flat = templates.reshape(-1, 1, side, side)

    labels = _balanced_labels(size, num_classes, gen)
    font = torch.randint(0, n_fonts, (size,), generator=gen)
    draws = _draw_augment(size, augment, gen)
    inputs = torch.empty(size, c, h, w)
    for start in range(0, size, _CHUNK):
        sl = slice(start, min(start + _CHUNK, size))
        theta = _affine(draws, sl, h, w)
        if pairs:
            n_a = len(GLYPH_ALPHABET)
            left = _sample(flat, font[sl] * n_a + labels[sl] // n_a, _half(theta, -1.0), h, w)
            right = _sample(flat, font[sl] * n_a + labels[sl] % n_a, _half(theta, 1.0), h, w)
            mask = torch.maximum(left, right)
        else:
            mask = _sample(flat, font[sl] * num_classes + labels[sl], theta, h, w)
        mask = _stroke(mask, draws["stroke"][sl])
        inputs[sl] = _colour(mask, c, draws, sl, augment, gen)
    desc = describe("glyphs", input_shape=input_shape)
    return ClassificationData(inputs, labels, names, desc)


def _draw_augment(n: int, a: GlyphAugment, gen: torch.Generator) -> dict[str, torch.Tensor]:
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    return {
        "angle": uniform(-a.rotation, a.rotation) * (math.pi / 180),
        "scale": uniform(*a.scale),
        "aspect": uniform(-a.aspect, a.aspect),
        "shear": uniform(-a.shear, a.shear),
        "dx": uniform(-a.shift, a.shift),
        "dy": uniform(-a.shift, a.shift),
        "stroke": uniform(*a.stroke),
        "noise": uniform(*a.noise),
    }


def _affine(d: dict[str, torch.Tensor], sl: slice, h: int, w: int) -> torch.Tensor:
    """Sampling matrices ``(n, 2, 3)``, as for ``F.affine_grid``: output -> template coordinates.

    Work in a frame where one unit is half the shorter image side, so glyphs keep their aspect on
    non-square images and fit the shorter side.
    """
    ang, shear = d["angle"][sl], d["shear"][sl]
    sx = d["scale"][sl] * (1 + d["aspect"][sl])
    sy = d["scale"][sl] * (1 - d["aspect"][sl])
    cos, sin = torch.cos(ang), torch.sin(ang)
    # A = R(angle) @ Shear @ diag(1/sx, 1/sy): maps the glyph's frame back to the template
    a00, a01 = cos / sx, (cos * shear - sin) / sy
    a10, a11 = sin / sx, (sin * shear + cos) / sy
    m = min(h, w)
    fx, fy = w / m, h / m
    dx, dy = 2 * d["dx"][sl], 2 * d["dy"][sl]
    tx = -(a00 * dx + a01 * dy)
    ty = -(a10 * dx + a11 * dy)
    row0 = torch.stack([a00 * fx, a01 * fy, tx], dim=1)
    row1 = torch.stack([a10 * fx, a11 * fy, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


_PAIR_ZOOM = 1.6  # characters of a pair are drawn at 1/1.6 size, centred at -0.5 and +0.5


def _half(theta: torch.Tensor, side: float) -> torch.Tensor:
    """The sampling matrix for one character of a pair, in the left (-1) or right (+1) half."""
    out = _PAIR_ZOOM * theta
    out[:, 0, 2] -= side * 0.5 * _PAIR_ZOOM
    return out


def _sample(flat: torch.Tensor, index: torch.Tensor, theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Warp template ``flat[index[i]]`` by ``theta[i]`` onto an ``h`` x ``w`` image, for every ``i``.

    Samples that share a template are warped in one ``grid_sample`` call, their grids stacked
    along the height: that avoids copying a template per sample, the bulk of the cost otherwise.
    """
    n = len(index)
    # pixel centres in normalised coordinates (align_corners=False), as F.affine_grid makes them
    xs = ((torch.arange(w) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h) * 2 + 1) / h - 1).view(1, h, 1)
    t = theta.view(n, 2, 3, 1, 1)
    gx = t[:, 0, 0] * xs + t[:, 0, 1] * ys + t[:, 0, 2]
    gy = t[:, 1, 0] * xs + t[:, 1, 1] * ys + t[:, 1, 2]
    grid = torch.stack([gx, gy], dim=-1)  # (n, h, w, 2)
    order = torch.argsort(index, stable=True)
    ids, counts = torch.unique_consecutive(index[order], return_counts=True)
    out = torch.empty(n, 1, h, w)
    for template, rows in zip(ids.tolist(), torch.split(order, counts.tolist())):
        stacked = grid[rows].reshape(1, len(rows) * h, w, 2)
        warped = F.grid_sample(flat[template:template + 1], stacked, mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        out[rows] = warped.view(len(rows), 1, h, w)
    return out


def _stroke(mask: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Thicken or thin the strokes: blur, then a soft threshold per sample (low = thick)."""
    # the separable [1, 2, 1] / 4 blur as shifted sums: a 1-channel conv2d is many times slower
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    blurred = (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) / 16
    t = threshold.view(-1, 1, 1, 1)
    return ((blurred - t) / 0.3 + 0.5).clamp(0, 1)


def _colour(mask: torch.Tensor, channels: int, d: dict[str, torch.Tensor], sl: slice,
            a: GlyphAugment, gen: torch.Generator) -> torch.Tensor:
    """Paint ink on a background (colours past one channel) and add pixel noise."""
    n = mask.shape[0]
    if channels == 1:
        ink = a.ink[0] + (a.ink[1] - a.ink[0]) * torch.rand(n, 1, 1, 1, generator=gen)
        bg = a.background[0] + (a.background[1] - a.background[0]) * torch.rand(n, 1, 1, 1, generator=gen)
    else:
        # one light and one dark colour per sample; which one is the ink is a coin flip
        light = 0.6 + 0.4 * torch.rand(n, channels, 1, 1, generator=gen)
        dark = 0.4 * torch.rand(n, channels, 1, 1, generator=gen)
        light_ink = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
        ink = torch.where(light_ink, light, dark)
        bg = torch.where(light_ink, dark, light)
    image = bg + (ink - bg) * mask
    noise = torch.randn(image.shape, generator=gen) * d["noise"][sl].view(-1, 1, 1, 1)
    return (image + noise).clamp(0, 1)


# ---------------------------------------------------------------------------------- synthetic

def synthetic_dataset(
    input_shape: Sequence[int], num_classes: int, size: int, *, seed: int, split: str
) -> ClassificationData:
    """Gaussian class clusters, two per class, embedded in ``input_shape``; balanced over classes.

    The cluster centres and the embedding depend on the seed only, so train and test (``split``)
    share them and differ in the drawn points.
    """
    dim = math.prod(input_shape)
    latent = min(dim, 16)
    task = _generator(seed, "synthetic", "task")
    # float64 throughout, rounded at the end: the float32 result then does not depend on how the
    # matrix product splits its sums (thread count, BLAS build)
    f64 = torch.float64
    centres = 1.2 * torch.randn(num_classes, 2, latent, generator=task, dtype=f64)
    embed = torch.linalg.qr(torch.randn(dim, latent, generator=task, dtype=f64)).Q.T  # orthonormal rows
    gen = _generator(seed, "synthetic", split)
    labels = _balanced_labels(size, num_classes, gen)
    sub = torch.randint(0, 2, (size,), generator=gen)
    z = centres[labels, sub] + 0.6 * torch.randn(size, latent, generator=gen, dtype=f64)
    x = (z @ embed * math.sqrt(dim / latent) + 0.1 * torch.randn(size, dim, generator=gen, dtype=f64)).float()
    names = tuple(f"class {k}" for k in range(num_classes))
    desc = describe("synthetic")
    return ClassificationData(x.reshape(size, *input_shape).contiguous(), labels, names, desc)


# ---------------------------------------------------------------------------------- fake

def _fake(shape: tuple[int, ...], classes: int, seed: int, n_train: int, n_test: int
          ) -> tuple[ClassificationData, ClassificationData]:
    from torchvision.datasets import FakeData
    from torchvision.transforms import ToTensor

    # FakeData draws an image as PIL, which allows only 1, 3 or 4 channels; draw one grey image of
    # all the values and reshape, which works for any shape.
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    image_size = (1, rows, shape[-1])
    offset = int(_generator(seed, "fake", "offset").initial_seed() % 2**40)
    out = []
    for start, n in ((offset, n_train), (offset + n_train, n_test)):
        fake = FakeData(size=n, image_size=image_size, num_classes=classes, transform=ToTensor(),
                        random_offset=start)
        items = [fake[i] for i in range(n)]
        inputs = torch.stack([x for x, _ in items]).reshape(n, *shape).float()
        labels = torch.tensor([y for _, y in items], dtype=torch.int64)
        out.append(ClassificationData(inputs, labels, tuple(f"class {k}" for k in range(classes)),
                                      describe("fake")))
    return out[0], out[1]


# ---------------------------------------------------------------------------------- local folders

@dataclass(frozen=True)
class _Local:
    title: str
    folder: str  # what torchvision looks for under the root
    files: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loader: Callable[[str, bool], tuple[torch.Tensor, torch.Tensor, list[str]]]


def _mnist_loader(cls_name: str) -> Callable[[str, bool], tuple[torch.Tensor, torch.Tensor, list[str]]]:
    def load(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(root, train=train, download=False)
        return ds.data.unsqueeze(1), ds.targets.long(), list(ds.classes)  # (N, 1, 28, 28) uint8

    return load


def _cifar_loader(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(root, train=train, download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_LOCAL = {
    "mnist": _Local("MNIST", "MNIST/raw", _MNIST_FILES, (1, 28, 28), (0.1307,), (0.3081,),
                    _mnist_loader("MNIST")),
    "fashionmnist": _Local("Fashion-MNIST", "FashionMNIST/raw", _MNIST_FILES, (1, 28, 28), (0.2860,),
                           (0.3530,), _mnist_loader("FashionMNIST")),
    "cifar10": _Local("CIFAR-10", "cifar-10-batches-py",
                      ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                       "test_batch", "batches.meta"),
                      (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _cifar_loader),
}
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _find_root(info: _Local, given: Path) -> Path:
    """The root torchvision wants, also when the user named the data folder itself (or its parent)."""
    parts = Path(info.folder).parts
    candidates = [given] + [given.parents[i] for i in range(min(len(parts), len(given.parents)))]
    for root in candidates:
        if all((root / info.folder / f).is_file() for f in info.files):
            return root
    # nothing complete: report against the folder that is there, so the message names real paths
    return next((root for root in candidates if (root / info.folder).is_dir()), given)


def _load_local(kind: str, path: str, shape: tuple[int, ...], classes: int, seed: int,
                train_n: int | None, test_n: int | None) -> tuple[ClassificationData, ClassificationData]:
    info = _LOCAL[kind]
    if shape != info.shape:
        raise GradscopeError(
            f"{info.title} images are {_shape_text(info.shape)}, but the model takes inputs of "
            f"{_shape_text(shape)}; use a model whose first layer takes {_shape_text(info.shape)} "
            f"(or spec 'glyphs', which is drawn at any image size)")
    if classes != 10:
        raise GradscopeError(
            f"{info.title} has 10 classes, but the model has {classes} outputs; give the model a "
            f"final layer with 10 outputs (or use spec 'glyphs', which fits any number of classes)")
    root = _find_root(info, Path(path).expanduser())
    folder = root / info.folder
    missing = [f for f in info.files if not (folder / f).is_file()]
    if missing:
        raise GradscopeError(_missing_message(kind, info, Path(path), folder, missing))
    out = []
    for train, n, split in ((True, train_n, "train"), (False, test_n, "test")):
        try:
            images, labels, names = info.loader(str(root), train)
        except (RuntimeError, ValueError, TypeError, KeyError, OSError, EOFError) as exc:
            raise GradscopeError(
                f"could not read {info.title} from {folder} (torchvision says: {exc}); the files are "
                f"there but do not read as {info.title}: fetch them again with torchvision's "
                f"`download=True` on a machine with network and copy them here") from exc
        if n is not None:
            if n > len(labels):
                raise GradscopeError(
                    f"asked for {n} {split} samples, but {info.title} in {folder} has {len(labels)}; "
                    f"ask for at most {len(labels)}")
            pick = torch.randperm(len(labels), generator=_generator(seed, kind, split))[:n]
            images, labels = images[pick], labels[pick]
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        inputs = ((images.float() / 255.0 - mean) / std).contiguous()
        out.append(ClassificationData(inputs, labels.long(), names, describe(f"{kind}:{path}")))
    return out[0], out[1]


def _missing_message(kind: str, info: _Local, given: Path, folder: Path, missing: list[str]) -> str:
    listed = ", ".join(missing)
    gz = [f for f in missing if (folder / (f + ".gz")).is_file()]
    tar = given / "cifar-10-python.tar.gz"
    if gz:
        hint = f"they are still compressed: run `gunzip {folder}/*.gz`"
    elif kind == "cifar10" and tar.is_file():
        hint = f"the archive is not unpacked yet: run `tar -xzf {tar} -C {given}`"
    else:
        cls = _TORCHVISION_CLASS[kind]
        hint = (f"gradscope never downloads; on a machine with network run `python -c \"from "
                f"torchvision.datasets import {cls}; {cls}('{given}', download=True)\"` (it fetches "
                f"both splits), copy the resulting {Path(info.folder).parts[0]} folder into {given}, "
                f"or use spec 'glyphs'")
    return (f"{info.title} not found: expected the files {listed} in {folder} (spec "
            f"'{kind}:{given}'); {hint}")


# ---------------------------------------------------------------------------------- helpers

def _parse_spec(spec: object) -> tuple[str, str]:
    valid = ", ".join(repr(s) for s in SPECS)
    if not isinstance(spec, str):
        raise GradscopeError(f"expected a data spec string, one of {valid}; got {spec!r}")
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _LOCAL:
        if not sep or not path.strip():
            raise GradscopeError(
                f"the spec {spec!r} names no folder: expected '{kind}:PATH' with PATH the folder "
                f"holding the dataset, e.g. '{kind}:./data'")
        return kind, path.strip()
    if kind in ("glyphs", "synthetic", "fake") and not sep:
        return kind, ""
    raise GradscopeError(f"unknown data spec {spec!r}; expected one of {valid}")


def _check_shape(input_shape: object) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in cast(Iterable[Any], input_shape))
    except (TypeError, ValueError):
        raise GradscopeError(
            f"expected input_shape as a tuple of positive ints such as (1, 28, 28), got {input_shape!r}"
        ) from None
    if not shape or min(shape) < 1:
        raise GradscopeError(
            f"expected input_shape as a non-empty tuple of positive ints such as (1, 28, 28) (one "
            f"sample, no batch dimension), got {input_shape!r}")
    return shape


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GradscopeError(f"expected {name} to be an int >= {minimum}, got {value!r}")
    return int(value)


def _generator(seed: int, *stream: str) -> torch.Generator:
    """An independent random stream per (seed, purpose, split), stable across runs and platforms."""
    words = [seed] + [int.from_bytes(s.encode(), "little") % 2**32 for s in stream]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _standardise(train: ClassificationData, test: ClassificationData
                 ) -> tuple[ClassificationData, ClassificationData]:
    """Shift and scale both splits by the train split's per-channel mean and std (in place).

    Standardised inputs are what image pipelines feed a model (MNIST's ``Normalize``), and they
    make the first epoch of Adam markedly more effective on these mostly-dark images.
    """
    x = train.inputs
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // x.shape[1]
    # float64 sums, chunk by chunk: the float32 result then does not depend on the thread count
    total = sum(chunk.sum(dim=dims, dtype=torch.float64) for chunk in x.split(_CHUNK))
    mean = (total / count).view(1, -1, *[1] * (x.dim() - 2))
    mean32 = mean.float()
    squares = sum((chunk - mean32).square_().sum(dim=dims, dtype=torch.float64) for chunk in x.split(_CHUNK))
    std = (squares / max(count - 1, 1)).sqrt().clamp_min(1e-6).view_as(mean)
    for ds in (train, test):
        ds.inputs.sub_(mean32).div_(std.float())
    return train, test


def _balanced_labels(size: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Each class ``size // num_classes`` or one more times, in random order."""
    labels = torch.arange(size, dtype=torch.int64) % num_classes
    return labels[torch.randperm(size, generator=gen)]


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)
