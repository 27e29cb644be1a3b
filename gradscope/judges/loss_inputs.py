"""GS501 from what reached ``F.cross_entropy``, ``F.nll_loss`` and
``F.binary_cross_entropy_with_logits`` in the user's own loop."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.loss_inputs import LossInputSite, LossInputsRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

_CHECKED_BY_THE_LOOP = ("cross_entropy", "nll_loss")   # gradscope run's own loop checks these itself


def _place(site: LossInputSite) -> str:
    return f" (called at {site.site})" if site.site else ""


def judge_loss_inputs(rec: LossInputsRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    model_file = run.run is not None and run.run.mode == "model"
    for site in rec.sites:
        n = site.checked
        if not n or (model_file and site.function in _CHECKED_BY_THE_LOOP):
            continue
        every = f"in all {n} sampled call(s)" if n > 1 else "in the sampled call"
        if site.function == "cross_entropy" and site.rows_sum_to_one == n:
            out.append(finding(
                "GS501", run.root_name,
                f"F.cross_entropy{_place(site)} got probabilities {every}: every row is non-negative and "
                "sums to 1, so the model already applied softmax and the loss applies log-softmax again. "
                "The loss cannot get near 0, the gradients shrink and training stalls.",
                "Return logits from the model (drop the final softmax) and apply softmax only to report "
                "probabilities."))
        elif site.function == "cross_entropy" and site.in_unit_interval == n:
            out.append(finding(
                "GS501", run.root_name,
                f"F.cross_entropy{_place(site)} got values strictly between 0 and 1 {every}, as a sigmoid "
                "gives: cross-entropy applies log-softmax to raw logits itself, so over inputs squeezed "
                "into (0, 1) the softmax is nearly flat, the loss cannot fall far below log(classes) and "
                "the gradients are small.",
                "Return raw logits from the model (drop the final sigmoid)."))
        elif site.function == "nll_loss" and site.non_negative == n:
            out.append(finding(
                "GS501", run.root_name,
                f"F.nll_loss{_place(site)} got non-negative values {every}: NLLLoss expects "
                "log-probabilities (all <= 0); fed probabilities or logits it optimises -p[target] or "
                "-logit[target] instead of the log-likelihood.",
                "End the model with log_softmax (not softmax), or give logits to CrossEntropyLoss."))
        elif site.function == "binary_cross_entropy_with_logits" and site.in_unit_interval == n:
            out.append(finding(
                "GS501", run.root_name,
                f"F.binary_cross_entropy_with_logits{_place(site)} got values strictly between 0 and 1 "
                f"{every}, as a sigmoid gives: BCEWithLogitsLoss applies the sigmoid itself, so the "
                "predictions are squeezed into (0.5, 0.73) and the model cannot express confidence.",
                "Return raw logits (drop the sigmoid), or use BCELoss on the probabilities."))
    return out
