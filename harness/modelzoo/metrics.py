"""Accuracy metrics per output, and tolerance policies by precision class.

Per output, over every data set: ``max_abs_error``; ``max_rel_error`` (each
element's error over its reference magnitude, floored at 1e-3 of the output's
peak magnitude so exact zeros do not turn every difference into infinity);
``rel_l2_error`` (``||a - e|| / ||e||``); ``cosine_similarity``. For classifier
outputs (``probabilities`` or ``logits``, classes along ``class_axis``):
``top1_agreement`` and ``top5_overlap``, counted only over rows whose reference
ranking is not a tie within the policy's tolerance (a tie has no right answer;
such rows are reported as ``tied_rows``).

A policy judges by precision class: an fp32 model is held to fp32 figures, an
int8 (or a bf16 configuration's) result to looser ones. ``None`` for rtol/atol
means no element-wise check: int8 outputs move by whole quantization steps, so
they are judged by cosine similarity and top-k agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from harness.modelzoo.manifest import OutputSpec

PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
TOP_K = 5


@dataclass(frozen=True)
class Policy:
    precision: str
    rtol: float | None
    atol: float | None
    min_cosine: float
    min_top1: float
    min_top5: float
    #: reference rows whose top scores differ by less than this fraction of the row's
    #: peak are ties (besides differences within rtol/atol)
    tie_fraction: float = 0.0

    @property
    def elementwise(self) -> bool:
        return self.rtol is not None and self.atol is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_POLICIES: dict[str, Policy] = {
    "fp32": Policy("fp32", rtol=1e-3, atol=1e-4, min_cosine=0.9999, min_top1=1.0, min_top5=1.0),
    "fp16": Policy("fp16", rtol=1e-2, atol=1e-2, min_cosine=0.999, min_top1=0.99,
                   min_top5=0.95, tie_fraction=1e-3),
    "bf16": Policy("bf16", rtol=5e-2, atol=5e-2, min_cosine=0.99, min_top1=0.95, min_top5=0.8,
                   tie_fraction=1e-2),
    "int8": Policy("int8", rtol=None, atol=None, min_cosine=0.98, min_top1=0.9, min_top5=0.8,
                   tie_fraction=2e-2),
}


def precision_class(model_precision: str, target_precision: str) -> str:
    """The coarser of a model's and a target configuration's precision classes (an unknown
    one counts as fp32)."""
    known = [p if p in PRECISION_ORDER else "fp32" for p in (model_precision, target_precision)]
    return max(known, key=PRECISION_ORDER.index)


def _looser(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def policy_for(model_precision: str, overrides: Mapping[str, float],
               target_precision: str = "fp32") -> Policy:
    """The model's class policy with its manifest overrides, loosened to the target's
    declared precision when that is coarser (a bf16 configuration of an fp32 model)."""
    policy = replace(DEFAULT_POLICIES[model_precision], **dict(overrides))
    target = target_precision if target_precision in DEFAULT_POLICIES else "fp32"
    if PRECISION_ORDER.index(target) <= PRECISION_ORDER.index(model_precision):
        return policy
    coarse = DEFAULT_POLICIES[target]
    return Policy(target, _looser(policy.rtol, coarse.rtol), _looser(policy.atol, coarse.atol),
                  min(policy.min_cosine, coarse.min_cosine),
                  min(policy.min_top1, coarse.min_top1), min(policy.min_top5, coarse.min_top5),
                  max(policy.tie_fraction, coarse.tie_fraction))


def _rows(array: np.ndarray, class_axis: int) -> np.ndarray:
    moved = np.moveaxis(array, class_axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _tie_margin(row: np.ndarray, policy: Policy) -> float:
    peak = float(np.abs(row).max()) if row.size else 0.0
    return max(policy.atol or 0.0, (policy.rtol or 0.0) * peak,
               max(policy.tie_fraction, 1e-6) * peak)


@dataclass
class OutputMetrics:
    """Accumulates one output's figures over data sets."""

    spec: OutputSpec
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    sq_error: float = 0.0
    sq_reference: float = 0.0
    min_cosine: float = 1.0
    top1_agree: int = 0
    top1_rows: int = 0
    top5_sum: float = 0.0
    top5_rows: int = 0
    tied_rows: int = 0
    elements: int = 0

    def add(self, expected: np.ndarray, actual: np.ndarray, policy: Policy) -> None:
        exp = np.asarray(expected, dtype=np.float64)
        act = np.asarray(actual, dtype=np.float64)
        self.elements += exp.size
        if exp.size == 0:
            return
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(act - exp)
            diff = np.where(np.isnan(diff), np.inf, diff)
            peak = float(np.abs(exp).max())
            floor = max(1e-3 * peak, np.finfo(np.float64).tiny)
            self.max_abs_error = max(self.max_abs_error, float(diff.max()))
            self.max_rel_error = max(self.max_rel_error,
                                     float((diff / np.maximum(np.abs(exp), floor)).max()))
            self.sq_error += float(np.sum(diff * diff))
            self.sq_reference += float(np.sum(exp * exp))
        self.min_cosine = min(self.min_cosine, cosine_similarity(exp, act))
        if self.spec.is_classifier:
            self._add_ranking(_rows(exp, self.spec.class_axis),
                              _rows(act, self.spec.class_axis), policy)

    def _add_ranking(self, exp_rows: np.ndarray, act_rows: np.ndarray, policy: Policy) -> None:
        classes = exp_rows.shape[-1]
        k = min(TOP_K, classes)
        for exp, act in zip(exp_rows, act_rows, strict=True):
            order = np.argsort(-exp, kind="stable")
            margin = _tie_margin(exp, policy)
            if classes > 1 and exp[order[0]] - exp[order[1]] <= margin:
                self.tied_rows += 1
                continue
            self.top1_rows += 1
            self.top1_agree += int(np.argmax(act) == order[0])
            if classes > k and exp[order[k - 1]] - exp[order[k]] > margin:
                top_act = set(np.argsort(-act, kind="stable")[:k].tolist())
                self.top5_sum += len(top_act & set(order[:k].tolist())) / k
                self.top5_rows += 1

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "rel_l2_error": (float(np.sqrt(self.sq_error / self.sq_reference))
                             if self.sq_reference else float(np.sqrt(self.sq_error))),
            "cosine_similarity": self.min_cosine,
            "elements": self.elements,
        }
        if self.spec.is_classifier:
            data["top1_agreement"] = (self.top1_agree / self.top1_rows if self.top1_rows
                                      else None)
            data["top5_overlap"] = self.top5_sum / self.top5_rows if self.top5_rows else None
            data["top1_rows"] = self.top1_rows
            data["tied_rows"] = self.tied_rows
        return data


def cosine_similarity(expected: np.ndarray, actual: np.ndarray) -> float:
    """Cosine of the angle between two tensors seen as vectors (1.0 for two zeros)."""
    exp = np.asarray(expected, dtype=np.float64).ravel()
    act = np.asarray(actual, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(exp)) and np.all(np.isfinite(act))):
        return float("nan")
    norm = float(np.linalg.norm(exp) * np.linalg.norm(act))
    if norm == 0.0:
        return 1.0 if not exp.any() and not act.any() else 0.0
    return float(np.dot(exp, act) / norm)


def violations(summaries: Mapping[str, Mapping[str, Any]], policy: Policy) -> list[str]:
    """What breaks the policy, one short line per output and figure."""
    found = []
    for name, figures in summaries.items():
        cosine = figures["cosine_similarity"]
        if not cosine >= policy.min_cosine:  # also catches nan
            found.append(f"{name}: cosine similarity {cosine:.6g} < {policy.min_cosine:g}")
        top1 = figures.get("top1_agreement")
        if top1 is not None and top1 < policy.min_top1:
            found.append(f"{name}: top-1 agreement {top1:.4g} < {policy.min_top1:g}")
        top5 = figures.get("top5_overlap")
        if top5 is not None and top5 < policy.min_top5:
            found.append(f"{name}: top-5 overlap {top5:.4g} < {policy.min_top5:g}")
    return found


def headline(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The worst figures over all outputs, for tables and JUnit."""
    values = list(summaries.values())
    top1 = [v["top1_agreement"] for v in values if v.get("top1_agreement") is not None]
    top5 = [v["top5_overlap"] for v in values if v.get("top5_overlap") is not None]
    return {
        "max_abs_error": max((v["max_abs_error"] for v in values), default=0.0),
        "max_rel_error": max((v["max_rel_error"] for v in values), default=0.0),
        "min_cosine_similarity": min((v["cosine_similarity"] for v in values), default=1.0,
                                     key=lambda c: -1.0 if c != c else c),
        "top1_agreement": min(top1) if top1 else None,
        "top5_overlap": min(top5) if top5 else None,
    }
