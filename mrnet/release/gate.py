"""Champion/challenger promotion gate and the comparison table (``mrnet compare``).

The gate compares the final-epoch normalized validation loss of every (PG, task) pair, where
1.0 is the label-prior predictor and lower is better (encoder/targets.py), so every task is on one scale.
The challenger is promoted only if all of these hold:

- it is complete: every PG of the champion is in it (a run with a failed PG never gets here,
  because its report fails first);
- no (PG, task) loss of the champion is missing or rises by more than ``gate.tolerance``;
- the mean over the shared (PG, task) pairs rises by at most ``gate.aggregate_tolerance``
  (the aggregate "improves or holds").

With no champion yet, the first complete release becomes champion. Embedding stability
against the champion (mean k-NN overlap@k on a fixed sample of products, §4's nearest
neighbours) is reported beside the decision; it informs the decision but does not gate it.
Every decision carries its reasons, and publish logs it to MLflow.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from mrnet.config.schema import GateConfig
from mrnet.data.sample import hash_sample
from mrnet.evaluation.retrieval import knn


def final_losses(summary: dict) -> dict[tuple[str, str], float]:
    """{(pg, task): normalized validation loss of the weights each PG kept (its best epoch)}."""
    from mrnet.release.summary import final_val

    return {(pg, task): float(values["loss"]) for pg, result in summary["pgs"].items()
            for task, values in final_val(result).items()}


EVAL_KEY = re.compile(r"eval\.[^.]+\.(agnostic|pg)\.(lr|rf)")


def gated_metrics(metrics: dict) -> dict[str, float]:
    """The downstream metrics the gate compares: MRNet features (not TF-IDF or the extras,
    which do not depend on the model) × LR/RF, per task (evaluation.metrics names)."""
    return {k: float(v) for k, v in metrics.items() if EVAL_KEY.fullmatch(k)}


def comparable(new: dict | None, old: dict | None) -> tuple[tuple[dict | None, dict | None], str | None]:
    """(challenger, champion) gated metrics from two manifests' ``evaluation`` sections, or (None, None) and a
    note when the evaluation settings differ (``settings``, a hash of ``evaluation.*``): metrics scored
    another way (other folds, another LR C rule) are not comparable, so the loss gate decides alone."""
    new, old = new or {}, old or {}
    if old.get("gated") and new.get("gated") and new.get("settings") != old.get("settings"):
        return (None, None), (f"downstream metrics not compared: the evaluation settings changed since the champion "
                              f"({old.get('settings') or 'before settings were recorded'} → {new.get('settings')}); "
                              "the loss gate decides")
    return (new.get("gated"), old.get("gated")), None


def evaluation_rows(new: dict | None, old: dict | None, tolerance: float,
                    weights: dict[str, float] | None = None) -> tuple[list[dict], list[str]]:
    """Downstream metrics (higher is better) of the champion vs the challenger, and the reasons
    to refuse: a metric falling by more than ``tolerance / weight`` of its task (evaluation task
    ``weight``, default 1), or missing from the challenger."""
    if not old:
        return [], []  # the champion was not evaluated: nothing to hold the challenger to
    if new is None:
        return [], ["not evaluated (evaluation stage off or failed) while the champion was: downstream "
                     "metrics cannot be compared"]
    rows, reasons = [], []
    for key in sorted(old):
        a, b = old[key], new.get(key)
        limit = tolerance / (weights or {}).get(key.split(".")[1], 1.0)
        verdict = "missing" if b is None else "regressed" if a - b > limit else "improved" if b > a else "held"
        rows.append({"metric": key, "champion": a, "challenger": b, "delta": None if b is None else b - a,
                     "verdict": verdict})
        if verdict == "missing":
            reasons.append(f"{key}: no result (champion {a:.4f}); its task was skipped or not evaluated")
        elif verdict == "regressed":
            reasons.append(f"{key}: {a:.4f} → {b:.4f} (fell by {a - b:.4f} > eval_tolerance {tolerance}"
                           + (f" / weight {tolerance / limit:g})" if limit != tolerance else ")"))
    return rows, reasons


def decide(challenger: dict, champion: dict | None, cfg: GateConfig,
           evaluation: tuple[dict | None, dict | None] = (None, None), weights: dict[str, float] | None = None) -> dict:
    """Gate one challenger summary against the champion's; returns the decision with reasons.
    ``evaluation``: (challenger, champion) gated downstream metrics (``gated_metrics``);
    ``weights``: evaluation task → weight (a task's metrics may fall by eval_tolerance / weight)."""
    decision = _decide_losses(challenger, champion, cfg)
    rows, reasons = (evaluation_rows(*evaluation, cfg.eval_tolerance, weights) if champion is not None
                     else ([], []))
    decision["evaluation"] = rows
    if reasons and decision["promote"]:
        decision["reasons"] = []
    decision["reasons"] += reasons
    decision["promote"] = decision["promote"] and not reasons
    if rows and decision["promote"]:
        decision["reasons"].append(f"no downstream metric fell by more than {cfg.eval_tolerance}")
    return decision


def _decide_losses(challenger: dict, champion: dict | None, cfg: GateConfig) -> dict:
    new = final_losses(challenger)
    if challenger.get("failed"):
        return {"promote": False, "rows": [], "aggregate": None,
                "reasons": [f"failed PGs {sorted(challenger['failed'])}: a failed run never becomes champion"]}
    if champion is None:
        return {"promote": True, "rows": _rows(new, {}, cfg), "aggregate": {"challenger": _mean(new.values())},
                "reasons": ["no champion yet: the first complete release becomes champion"]}
    old = final_losses(champion)
    reasons = []
    missing_pgs = sorted(set(champion["pgs"]) - set(challenger["pgs"]))
    if missing_pgs:
        skipped = challenger.get("skipped") or {}
        why = "; ".join(f"{pg}: {skipped[pg]}" for pg in missing_pgs if pg in skipped)
        reasons.append(f"partial: PGs {missing_pgs} of the champion are not in this release"
                       + (f" (not trained: {why})" if why else ""))
    rows = _rows(new, old, cfg)
    for row in rows:
        if row["verdict"] == "missing" and row["pg"] not in missing_pgs:
            reasons.append(f"{row['pg']}.{row['task']}: task missing (champion {row['champion']:.4f})")
        elif row["verdict"] == "regressed":
            reasons.append(f"{row['pg']}.{row['task']}: loss {row['champion']:.4f} → {row['challenger']:.4f} "
                           f"(+{row['delta']:.4f} > tolerance {cfg.tolerance})")
    shared = [k for k in old if k in new]
    aggregate = {"champion": _mean(old[k] for k in shared), "challenger": _mean(new[k] for k in shared)}
    if shared and aggregate["challenger"] > aggregate["champion"] + cfg.aggregate_tolerance:
        reasons.append(f"aggregate loss {aggregate['champion']:.4f} → {aggregate['challenger']:.4f} "
                       f"(worse by more than {cfg.aggregate_tolerance})")
    promote = not reasons
    if promote:
        reasons.append(f"no (PG, task) loss rose by more than {cfg.tolerance}; aggregate "
                       f"{aggregate['champion']:.4f} → {aggregate['challenger']:.4f}")
    return {"promote": promote, "rows": rows, "aggregate": aggregate, "reasons": reasons}


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _rows(new: dict, old: dict, cfg: GateConfig) -> list[dict]:
    rows = []
    for pg, task in sorted(set(new) | set(old)):
        a, b = old.get((pg, task)), new.get((pg, task))
        if b is None:
            verdict = "missing"
        elif a is None:
            verdict = "new"
        else:
            verdict = "regressed" if b - a > cfg.tolerance else ("improved" if b < a else "held")
        rows.append({"pg": pg, "task": task, "champion": a, "challenger": b,
                     "delta": None if a is None or b is None else b - a, "verdict": verdict})
    return rows


def _sample_ids(ids, n: int) -> list[str]:
    """A fixed sample of n product ids (stable across releases)."""
    ids = list(ids)
    return [ids[i] for i in hash_sample(ids, n, 0, "stability")]


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean |kNN_a(i) ∩ kNN_b(i)| / k over rows, cosine similarity, self excluded (retrieval.knn:
    blocked, so a large ``gate.stability_sample`` never builds an N×N matrix)."""
    self_row = np.arange(len(a))
    _, na = knn(a, a, k, "cosine", exclude=self_row)
    _, nb = knn(b, b, k, "cosine", exclude=self_row)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(na, nb)]))


def stability(champion_embeddings: dict[str, str], challenger_embeddings: dict[str, str], cfg: GateConfig,
              read) -> dict[str, float]:
    """Per-PG k-NN overlap@k between the champion's and the challenger's embeddings of the same
    fixed product sample, plus their mean as ``mean``; ``read(uri)`` returns (frame with
    ``product_id``, vectors (N, d)) as ``embed.read_embeddings`` does."""
    out = {}
    for pg in sorted(set(champion_embeddings) & set(challenger_embeddings)):
        (old, x_old), (new, x_new) = read(champion_embeddings[pg]), read(challenger_embeddings[pg])
        ids = _sample_ids(set(old["product_id"]) & set(new["product_id"]), cfg.stability_sample)
        if len(ids) <= cfg.stability_k:
            continue
        a = x_old[pd.Index(old["product_id"]).get_indexer(ids)]
        b = x_new[pd.Index(new["product_id"]).get_indexer(ids)]
        out[pg] = knn_overlap(a, b, cfg.stability_k)
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


def table(decision: dict, stable: dict[str, float] | None = None, k: int = 10) -> str:
    """Champion vs challenger, side by side, then the decision and its reasons."""
    def fmt(v):
        return "–" if v is None else f"{v:.4f}"

    lines = [f"{'pg':<24} {'task':<12} {'champion':>9} {'challenger':>10} {'delta':>8}  verdict"]
    for r in decision["rows"]:
        delta = "–" if r["delta"] is None else f"{r['delta']:+.4f}"
        lines.append(f"{r['pg']:<24} {r['task']:<12} {fmt(r['champion']):>9} {fmt(r['challenger']):>10} "
                     f"{delta:>8}  {r['verdict']}")
    agg = decision.get("aggregate") or {}
    lines.append(f"\naggregate normalized val loss: champion {fmt(agg.get('champion'))}, "
                 f"challenger {fmt(agg.get('challenger'))}")
    if stable:
        lines.append(f"embedding stability, mean k-NN overlap@{k}: {stable.get('mean', float('nan')):.3f} "
                     f"(min {min(v for p, v in stable.items() if p != 'mean'):.3f})")
    if decision.get("evaluation"):
        lines.append(f"\n{'downstream metric (higher is better)':<36} {'champion':>9} {'challenger':>10} {'delta':>8}  verdict")
        for r in decision["evaluation"]:
            delta = "–" if r["delta"] is None else f"{r['delta']:+.4f}"
            lines.append(f"{r['metric']:<36} {fmt(r['champion']):>9} {fmt(r['challenger']):>10} {delta:>8}  {r['verdict']}")
    lines.append(f"decision: {'PROMOTE' if decision['promote'] else 'KEEP CHAMPION'}")
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    return "\n".join(lines)
