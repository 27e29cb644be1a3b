"""The complete examples of docs/integrations.md run as written (each where its framework is
installed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
NEEDS = {"lightning": "lightning.pytorch", "transformers": "transformers", "accelerate": "accelerate",
         "tensorboard": "tensorboard"}


def examples() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        if block.startswith("# a complete example"):
            heading = [h for h in re.findall(r"^## (.+)$", text[: text.index(block)], flags=re.M)][-1]
            out.append((heading, block))
    return out


def test_every_section_has_its_example() -> None:
    assert [h for h, _ in examples()] == ["Lightning", "The Hugging Face Trainer", "accelerate", "TensorBoard",
                                          "Your own test suite"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:.*LeafSpec.*")
@pytest.mark.parametrize(("heading", "code"), examples(), ids=[h for h, _ in examples()])
def test_the_example_runs(heading: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for word, module in NEEDS.items():
        if re.search(rf"^\s*(?:from|import) {word}\b", code, flags=re.M) or f"integrations.{word}" in code:
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)          # the examples write their files into the working folder
    reset_accelerate()                   # accelerate keeps its state in process-wide singletons
    try:
        exec(compile(code, f"{DOC.name} ({heading})", "exec"), {"__name__": "__docs__"})
    finally:
        reset_accelerate()


def reset_accelerate() -> None:
    import sys

    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
