"""Whose code is a traceback frame? One answer for every message that shows the user's frames.

``frame_kind(filename)`` says ``"gradscope"`` (this package, or Python's import machinery and
code compiled from strings), ``"torch"`` (PyTorch itself), ``"library"`` (the standard library or
another installed package) or ``"user"`` (everything else: the user's own files).
"""
from __future__ import annotations

import functools
import site
import sysconfig
from pathlib import Path
from typing import Literal

FrameKind = Literal["gradscope", "torch", "library", "user"]
GRADSCOPE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def library_roots() -> tuple[Path, ...]:
    """The folders Python loads the standard library and installed packages from."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages())
    return tuple(Path(root).resolve() for root in roots if root)


@functools.lru_cache(maxsize=1)
def torch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


@functools.lru_cache(maxsize=4096)
def frame_kind(filename: str) -> FrameKind:
    """Classify the file a frame runs in (see the module docstring)."""
    if filename.startswith(("<frozen ", "<string")):
        return "gradscope"
    try:
        resolved = Path(filename).resolve()
    except (OSError, ValueError):
        return "user"
    if resolved.is_relative_to(GRADSCOPE_DIR):
        return "gradscope"
    torch_root = torch_dir()
    if torch_root is not None and resolved.is_relative_to(torch_root):
        return "torch"
    if any(resolved.is_relative_to(root) for root in library_roots()):
        return "library"
    return "user"


def library_name(filename: str) -> str:
    """The installed package (or standard-library module) a library frame belongs to."""
    resolved = Path(filename).resolve()
    for root in sorted(library_roots(), key=lambda r: len(str(r)), reverse=True):
        if resolved.is_relative_to(root):
            return resolved.relative_to(root).parts[0].removesuffix(".py")
    return resolved.stem
