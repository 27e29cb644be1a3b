"""The measuring corpus of issue 14: find the bugs people really hit, and no false alarms on real
clean programs.

Every script here runs unmodified through the real command line, ``gradscope run SCRIPT --out
DIR -- ARGS`` (in-process through click's CliRunner, as tests/test_script.py does; the DDP
specimen as two processes meeting through a FileStore).

- ``clean/``: realistic training programs written the way their authors write them (each
  docstring says which public example it follows). They must get no finding at warning or error
  severity.
- ``bugs/``: one specimen per mechanism, modelled on a public report (cited in its docstring),
  each with a fixed twin: the same script with ``--fixed``, which fixes exactly that bug. The
  specimen must get its finding at the place a user would look (``where``); the twin must get no
  warning or error.

A test that fails against today's gradscope carries ``xfail(strict=True)`` with what gradscope
does instead; remove the marker when the fix lands (strict: an unexpected pass fails the suite).
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch.distributed as dist
from click.testing import CliRunner

from gradscope.cli import main

CORPUS = Path(__file__).resolve().parent
ALARM = ("warning", "error")

# Findings whose code was not chosen when this corpus was written. While a constant is None the
# test matches any warning or error on its message alone; set it to the code once the catalog has
# one (the working tree now emits GS511, GS308 and GS701 for these three, and passes with them set).
NEW_CODE_ACCUMULATION: str | None = "GS511"  # zero_grad() inside the accumulation loop
NEW_CODE_LR_COLLAPSE: str | None = "GS308"   # a schedule that drives the lr down by more than 1000x
NEW_CODE_DDP_MODULE: str | None = "GS701"    # a DDP model trained through model.module(x)

Record = dict[str, Any]
Finding = dict[str, Any]


def listing(findings: list[Finding]) -> str:
    if not findings:
        return "gradscope reported nothing"
    return "gradscope reported:\n" + "\n".join(
        f"  {f['severity']} {f['code']} {f['where']!r}: {f['message']}" for f in findings)


def alarms(record: Record) -> list[Finding]:
    return [f for f in record["findings"] if f["severity"] in ALARM]


@pytest.fixture(scope="module")
def gradscope_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Record]]:
    """``gradscope run SCRIPT -- ARGS`` in-process; each (script, args) runs once per module."""
    cache: dict[tuple[str, tuple[str, ...]], tuple[Any, Record]] = {}

    def run(script: str, *args: str) -> tuple[Any, Record]:
        key = (script, args)
        if key not in cache:
            out = tmp_path_factory.mktemp("corpus") / "out"
            result = CliRunner().invoke(main, ["run", str(CORPUS / script), "--out", str(out), "--", *args],
                                        terminal_width=100)
            path = out / "run.json"
            assert path.is_file(), f"gradscope wrote no record for {script}:\n{result.output[-4000:]}"
            cache[key] = (result, json.loads(path.read_text(encoding="utf-8")))
        return cache[key]

    return run


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# ---- clean programs and fixed twins: no warning, no error ---------------------------------------
CLEAN = [
    pytest.param("clean/vae_sum.py", (), id="a-vae-trained-on-summed-bce-plus-kl-gets-no-warning"),
    pytest.param("clean/word_lm.py", (),
                 id="the-word-language-model-with-manual-sgd-at-lr-20-and-clipping-at-0.25-gets-no-warning"),
    pytest.param("clean/dcgan.py", (), id="a-dcgan-with-two-adams-and-a-detached-fake-gets-no-warning"),
    pytest.param("clean/lbfgs_closure.py", (), id="lbfgs-with-a-closure-evaluated-many-times-per-step-gets-no-warning"),
    pytest.param("clean/actor_critic.py", (), id="an-actor-critic-with-an-entropy-bonus-gets-no-warning"),
    pytest.param("clean/gcn.py", (), id="a-gcn-with-a-train-mask-and-weight-decay-gets-no-warning"),
    pytest.param("clean/vit.py", (), id="a-vit-with-warmup-cosine-lambdalr-and-clipping-gets-no-warning"),
    pytest.param("clean/finetune.py", (),
                 id="fine-tuning-a-head-on-a-frozen-eval-mode-backbone-gets-no-warning"),
]

TWINS = [
    pytest.param("bugs/head_frozen.py", ("--fixed",), id="freezing-the-backbone-and-training-the-head-gets-no-warning"),
    pytest.param("bugs/continual_head.py", ("--fixed",),
                 id="rebuilding-the-optimizer-after-adding-the-task-2-head-gets-no-warning"),
    pytest.param("bugs/pruned_layer.py", ("--fixed",),
                 id="rebuilding-the-optimizer-after-pruning-gets-no-warning"),
    pytest.param("bugs/forward_no_zero_grad.py", ("--fixed",),
                 id="calling-forward-directly-with-zero-grad-gets-no-warning"),
    pytest.param("bugs/layers_in_list.py", ("--fixed",), id="blocks-in-a-modulelist-get-no-warning"),
    pytest.param("bugs/functional_dropout.py", ("--fixed",),
                 id="functional-dropout-following-self-training-gets-no-warning"),
    pytest.param("bugs/validation_in_train_mode.py", ("--fixed",),
                 id="validating-in-eval-mode-under-no-grad-gets-no-warning"),
    pytest.param("bugs/masked_target.py", ("--fixed",), id="a-mask-aligned-with-the-batch-gets-no-warning"),
    pytest.param("bugs/sigmoid_cross_entropy.py", ("--fixed",),
                 id="logits-into-cross-entropy-get-no-warning"),
    pytest.param("bugs/accumulation_zero_grad.py", ("--fixed",),
                 id="zeroing-once-per-accumulated-step-gets-no-warning"),
    pytest.param("bugs/steplr_collapse.py", ("--fixed",), id="steplr-with-gamma-0.5-gets-no-warning"),
]


@pytest.mark.parametrize(("script", "args"), CLEAN + TWINS)
def test_clean_program(gradscope_run: Callable[..., tuple[Any, Record]], script: str, args: tuple[str, ...]) -> None:
    result, record = gradscope_run(script, *args)
    assert result.exit_code == 0, result.output[-4000:]
    assert record["run"]["status"] == "completed", record["run"]
    assert record["steps"] > 0, f"gradscope watched no training in {script}:\n{result.stderr[-2000:]}"
    found = alarms(record)
    assert not found, listing(found)


# ---- bug specimens: the expected finding, at the place a user would look ---------------------------
@dataclass(frozen=True)
class Expected:
    """A finding with this code (at the catalog's severity), or, while the code is not chosen
    (None), any finding at warning or error severity; a ``where`` that fully matches ``where``;
    a message that matches every pattern of ``words`` (case-insensitive)."""

    code: str | None
    where: str
    words: tuple[str, ...] = ()

    def matches(self, f: Finding) -> bool:
        return ((f["code"] == self.code if self.code is not None else f["severity"] in ALARM)
                and re.fullmatch(self.where, f["where"]) is not None
                and all(re.search(w, f["message"], re.IGNORECASE) for w in self.words))

    def __str__(self) -> str:
        words = f" saying {' / '.join(self.words)}" if self.words else ""
        return f"{self.code or 'a warning or error'} at {self.where!r}{words}"


BUGS = [
    pytest.param("bugs/head_frozen.py", Expected("GS303", r"backbone(\.\d+)?"),
                 id="the-trainable-backbone-left-out-of-a-head-only-optimizer-is-GS303-on-the-backbone"),
    pytest.param("bugs/head_frozen.py", Expected("GS301", r"fc"),
                 id="the-frozen-head-in-the-optimizer-is-GS301-on-fc"),
    pytest.param("bugs/continual_head.py", Expected("GS303", r"heads\.1"),
                 id="the-task-2-head-missed-by-the-rebuilt-optimizer-is-GS303-on-heads.1"),
    pytest.param("bugs/pruned_layer.py", Expected("GS303", r"fc[12]"),
                 id="layers-replaced-by-pruning-without-a-new-optimizer-are-GS303-on-the-new-layers"),
    pytest.param("bugs/pruned_layer.py", Expected("GS307", r"fc[12]"),
                 id="the-old-layers-left-in-the-optimizer-after-pruning-are-GS307-on-fc1-and-fc2"),
    pytest.param("bugs/forward_no_zero_grad.py", Expected("GS503", r"Net"),
                 id="a-model-trained-through-model.forward-without-zero-grad-is-GS503-on-Net"),
    pytest.param("bugs/layers_in_list.py", Expected("GS101", r"MLP\.blocks"),
                 id="blocks-kept-in-a-python-list-are-GS101-on-MLP.blocks"),
    pytest.param("bugs/functional_dropout.py", Expected("GS504", r"Net"),
                 id="functional-dropout-with-training-true-in-evaluation-is-GS504-on-Net"),
    pytest.param("bugs/validation_in_train_mode.py", Expected("GS504", r"Classifier|bn|drop"),
                 id="validation-without-no-grad-or-eval-is-GS504-on-the-classifier"),
    pytest.param("bugs/masked_target.py", Expected("GS206", r"loss"),
                 id="an-infinite-loss-with-finite-gradients-is-GS206-on-the-loss"),
    pytest.param("bugs/sigmoid_cross_entropy.py", Expected("GS501", r"Classifier(\.out)?|out"),
                 id="sigmoid-before-cross-entropy-is-GS501-on-the-classifier"),
    pytest.param("bugs/accumulation_zero_grad.py",
                 Expected(NEW_CODE_ACCUMULATION, r"Sequential|SGD.*", (r"zero_grad", r"accumulat")),
                 id="zero-grad-on-every-micro-batch-is-a-finding-that-accumulation-does-nothing"),
    pytest.param("bugs/steplr_collapse.py", Expected(NEW_CODE_LR_COLLAPSE, r"(SGD|StepLR).*", (r"learning rate",)),
                 id="a-steplr-collapsing-the-lr-a-million-fold-is-a-finding-on-the-learning-rate"),
]


@pytest.mark.parametrize(("script", "expected"), BUGS)
def test_bug_specimen(gradscope_run: Callable[..., tuple[Any, Record]], script: str, expected: Expected) -> None:
    result, record = gradscope_run(script)
    assert result.exit_code == 0, result.output[-4000:]  # the script's own exit code, findings or not
    assert any(expected.matches(f) for f in record["findings"]), f"expected {expected}; " + listing(record["findings"])


# ---- the DDP specimen: two ranks through a FileStore ---------------------------------------------
DDP_SCRIPT = CORPUS / "bugs" / "ddp_module_forward.py"
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Record]:
    cache: dict[tuple[str, ...], Record] = {}

    def run(*script_args: str) -> Record:
        if script_args in cache:
            return cache[script_args]
        tmp = tmp_path_factory.mktemp("ddp")
        procs = [subprocess.Popen([sys.executable, "-m", "gradscope", "run", str(DDP_SCRIPT), "--out", str(tmp / "out"),
                                   "--", "--store", str(tmp / "store"), "--rank", str(r), "--world", "2", *script_args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)
                 for r in range(2)]
        done = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=120)
                done.append((p.returncode, out, err))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError("the distributed specimen did not finish (a hang)") from None
        assert all(code == 0 for code, _, _ in done), "\n".join(err[-2000:] for _, _, err in done)
        cache[script_args] = json.loads((tmp / "out" / "run.json").read_text(encoding="utf-8"))
        return cache[script_args]

    return run


@needs_gloo
@pytest.mark.distributed
def test_ddp_training_through_model_module_is_a_finding_that_nothing_is_all_reduced(
        ddp_run: Callable[..., Record]) -> None:
    record = ddp_run()
    expected = Expected(NEW_CODE_DDP_MODULE, r"Net|DistributedDataParallel|DDP",
                        (r"\.module\b|DistributedDataParallel", r"all-?reduce|synchroni"))
    assert any(expected.matches(f) for f in record["findings"]), f"expected {expected}; " + listing(record["findings"])


@needs_gloo
@pytest.mark.distributed
def test_ddp_training_through_the_wrapper_gets_no_warning(ddp_run: Callable[..., Record]) -> None:
    record = ddp_run("--fixed")
    assert record["distributed"]["world_size"] == 2
    found = alarms(record)
    assert not found, listing(found)


# ---- the corpus itself -----------------------------------------------------------------------------
def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_every_script_of_the_corpus_is_measured() -> None:
    measured = {p.values[0] for p in CLEAN + TWINS + BUGS} | {"bugs/" + DDP_SCRIPT.name}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.py")}
    assert on_disk == measured


def test_every_bug_specimen_cites_the_report_it_is_modelled_on_and_has_a_fixed_twin() -> None:
    for path in sorted((CORPUS / "bugs").glob("*.py")):
        text = _docstring(path)
        assert "Modelled on" in text and re.search(r"[\w.-]+/[\w.-]+#\d+", text), path.name
        assert "--fixed" in text and '"--fixed"' in path.read_text(encoding="utf-8"), path.name
