"""GS504 from the mode record."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.mode import ModeRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds


def _at(step: int | None) -> str:
    return f"first at step {step}" if step is not None else "at some step"


def judge_mode(rec: ModeRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if rec.evaluation_in_train_mode:
        names = sorted(rec.evaluation_in_train_mode)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append(finding(
            "GS504", names[0] if len(names) == 1 else run.root_name,
            f"evaluation (a forward under torch.no_grad/inference_mode, "
            f"{_at(rec.first_evaluation_in_train_mode_step)}) ran with {shown} in train mode: dropout "
            "stays random and BatchNorm uses batch statistics and updates its running ones, so test "
            "numbers are wrong and the model changes while being evaluated.",
            "Call model.eval() before evaluating, and model.train() again before training."))
    if rec.training_steps_in_eval_mode:
        out.append(finding(
            "GS504", run.root_name,
            f"training ran with the model in eval mode ({rec.training_steps_in_eval_mode} backward "
            f"pass(es), {_at(rec.first_training_in_eval_mode_step)}): dropout is off and BatchNorm "
            "statistics are frozen during training.",
            "Call model.train() at the start of each training epoch (after evaluating)."))
    if rec.functional_dropout_in_evaluation:
        names = sorted(rec.functional_dropout_in_evaluation)
        calls = sum(rec.functional_dropout_in_evaluation.values())
        out.append(finding(
            "GS504", names[0].split(" (")[0] if len(names) == 1 else run.root_name,
            f"dropout that is on (F.dropout(..., training=True), or scaled_dot_product_attention with "
            f"dropout_p > 0) ran {calls} time(s) during evaluation (under torch.no_grad/"
            f"inference_mode or with the model in eval mode, {_at(rec.first_functional_dropout_step)}) in "
            f"{', '.join(names[:4])}: functional dropout follows its own argument, not model.eval(), "
            "so evaluation runs a randomly thinned network and its numbers change from run to run.",
            "Pass training=self.training to F.dropout (dropout_p=self.p if self.training else 0.0 to "
            "scaled_dot_product_attention), or use an nn.Dropout module, and call model.eval() before "
            "evaluating. (Monte Carlo dropout keeps it on during evaluation on purpose.)"))
    if rec.unbackwarded_training_forwards >= 2 and rec.unbackwarded_in_train_mode:
        names = rec.unbackwarded_in_train_mode
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append(finding(
            "GS504", run.root_name,
            f"{rec.unbackwarded_training_forwards} forward pass(es) with gradients enabled and {shown} in "
            f"train mode never reached a backward pass ({_at(rec.first_unbackwarded_step)}): that is an "
            "evaluation run as training. Dropout drops units at random, BatchNorm normalises with batch "
            "statistics and moves its running statistics toward the evaluation data, and every forward "
            "builds an autograd graph for nothing.",
            "Evaluate after model.eval() inside torch.no_grad(), and call model.train() before training."))
    return out
