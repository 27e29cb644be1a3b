"""GS206 from the non-finite record: the first non-finite forward output or loss."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.loss import LossRecord
from gradscope.records.nonfinite import NonFiniteRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds


def _on_rank(rank: int | None, run: RunRecord) -> str:
    distributed = run.distributed
    if rank is None or distributed is None or distributed.world_size < 2:
        return ""
    return f" on rank {rank} (of {distributed.world_size})"


def judge_nonfinite(rec: NonFiniteRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    root = run.root_name
    step = rec.first_nonfinite_output_step
    if step is not None:
        where = rec.located.get(str(step))
        name = root if where == "" else where
        on = _on_rank(rec.located_rank.get(str(step), rec.first_nonfinite_output_rank), run)
        if where == "input":
            out.append(finding(
                "GS206", "input",
                f"the forward output became non-finite at step {step}{on} because the input batch "
                "already held NaN/Inf: the data, not the model, is the source.",
                "Check the data pipeline (normalisation dividing by zero, corrupt samples)."))
        elif where is not None:
            out.append(finding(
                "GS206", name or root,
                f"the forward output became non-finite at step {step}{on}; {name or root} was the first "
                "module whose output held NaN/Inf. Everything computed after it is garbage."))
        else:
            out.append(finding(
                "GS206", root,
                f"the forward output became non-finite at step {step}{on}. Run with watch(..., "
                "strict=True) to name the first module (costs a sync per step on a GPU)."))
    seen = run.probe(LossRecord)
    masked = seen.stats.first_nonfinite_step if seen is not None else None
    if masked is not None and rec.first_nonfinite_loss_step is None and (step is None or masked < step):
        out.append(finding(
            "GS206", "loss",
            f"the loss was non-finite at step {masked} while the gradients reaching the model stayed "
            "finite: a mask or clamp hides it (a target whose logit is masked to -inf, log of 0 under a "
            "where()), so the curve you log is NaN/Inf while training goes on.",
            "Find which samples give an infinite loss (compute it with reduction='none'); fix the mask "
            "or the targets rather than hiding the value."))
    loss = rec.first_nonfinite_loss_step
    # Under a GradScaler the gradient reaching the output is scaled and overflows by design (the
    # scaler skips those steps); persistent trouble shows as GS205 instead.
    if loss is not None and not run.grad_scaler and (step is None or loss < step):
        out.append(finding(
            "GS206", "loss",
            f"the loss became non-finite at step {loss}{_on_rank(rec.first_nonfinite_loss_rank, run)} while "
            "the model's output was finite: the loss function produced NaN/Inf (log of 0, a target out "
            "of range, a division by zero).",
            "Check the loss inputs: clamp probabilities before log, use the *WithLogits losses, and "
            "check targets for NaN."))
    return out
