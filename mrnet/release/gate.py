"""Champion/challenger promotion gate and the comparison table (``mrnet compare``).

The gate compares the final-epoch normalized validation loss of every (PG, task) pair, where
1.0 is the label-prior predictor and lower is better (encoder/targets.py), so every task is on one scale.
The challenger is promoted only if all of these hold:

- it is complete: every PG of the champion is in it (a run with a failed PG never gets here,
  because its report fails first);
- no (PG, task) loss of the champion is missing or rises by more than its limit: ``gate.tolerance``,
  or ``gate.noise_z`` standard errors of the difference where that is larger;
- the mean over the shared (PG, task) pairs rises by at most ``gate.aggregate_tolerance`` (the aggregate
  "improves or holds"), or ``noise_z`` standard errors of the mean's difference where that is larger.

Both rules count a loss above 1.0 as 1.0 (encoder/stopping.informative): a head worse than the prior knows
nothing of its task either way. The table shows the losses as measured.
The standard errors come from the validation split (train.validate: each task's per-product losses), so a
small PG's loss, measured on a few dozen products, must move further before it counts. A release
without them (written before they were recorded) is held to the tolerances alone. Only the champion's
standard errors count (``noise``), so a diverged challenger cannot widen its own limit.

A pair whose task either release retired (it overfit and was no longer drawn; encoder/stopping.py)
is shown with the verdict ``retired`` and weighs in neither rule: its loss at the kept epoch is that
of a head no longer trained while the shared encoder moved on, so it swings from week to week
(1.0–2.4 × prior on the demo's ``review``) without saying anything about the embedding.

With no champion yet, the first complete release becomes champion. Embedding stability
against the champion (mean k-NN overlap@k on a fixed sample of products, §4's nearest
neighbours) is reported beside the decision; it informs the decision but does not gate it.
Every decision carries its reasons, and publish logs it to MLflow.
"""

from __future__ import annotations

import re

import numpy as np

from mrnet.config.schema import GateConfig
from mrnet.data.sample import hash_rank, smallest_rank
from mrnet.encoder.stopping import informative
from mrnet.evaluation.retrieval import knn


def retired_pairs(summary: dict) -> set[tuple[str, str]]:
    """(PG, task) pairs whose task the PG's training retired (the report's ``retired``: task → epoch)."""
    return {(pg, task) for pg, report in summary["pgs"].items() for task in (report.get("retired") or {})}


def final_losses(summary: dict, key: str = "loss") -> dict[tuple[str, str], float]:
    """{(pg, task): normalized validation loss of the weights each PG kept (its best epoch)};
    ``key="se"``: its standard error instead, for the pairs that have one."""
    from mrnet.release.summary import final_val

    return {(pg, task): float(values[key]) for pg, result in summary["pgs"].items()
            for task, values in final_val(result).items() if key in values}


def noise(se_champion: dict, pairs) -> float | None:
    """Standard error of the difference of two equally good releases' summed losses over ``pairs`` (independent
    validation draws, each as noisy as the champion's: √2 × its standard error), or None when a pair lacks one.
    Only the champion's count: a diverged challenger's own per-product losses scatter widely, and its standard
    error must not widen the limit it is held to."""
    terms = [2 * se_champion.get(k, np.nan) ** 2 for k in pairs]
    return float(np.sqrt(np.sum(terms))) if terms and np.all(np.isfinite(terms)) else None


def limit(tolerance: float, z: float, se: float | None) -> float:
    """How far a loss may rise: the tolerance, or z standard errors where those are more."""
    return tolerance if se is None else max(tolerance, z * se)


EVAL_KEY = re.compile(r"eval\.([^.]+)\.(agnostic|pg)\.(lr|rf)")


def table2_key(key: str, features: dict[str, str] | None) -> bool:
    """Whether ``eval.<task>.<feature>.<clf>`` is MRNet's Table 2 column of its task (``features``: task →
    ``pg`` inside one PG, ``agnostic`` across PGs; evaluation/score.mrnet_feature, paper §4.1). Across PGs
    the PG-specific column stacks vectors from different spaces: on the demo's ingestible task its LR AUC
    ranged 0.81–0.88 over four trainings of the same code while the agnostic one held 0.999."""
    match = EVAL_KEY.fullmatch(key)
    return bool(match) and (not features or features.get(match[1], match[2]) == match[2])


def gated_metrics(metrics: dict, features: dict[str, str] | None = None) -> dict[str, float]:
    """The downstream metrics the gate compares: MRNet's Table 2 column of each task (``table2_key``; both
    MRNet features where ``features`` is not known) × LR/RF, not TF-IDF or the extras, which do not depend
    on the model (evaluation.metrics names)."""
    return {k: float(v) for k, v in metrics.items() if table2_key(k, features)}


def comparable(new: dict | None, old: dict | None) -> tuple[tuple[dict | None, dict | None], str | None]:
    """(challenger, champion) gated metrics from two manifests' ``evaluation`` sections, or (None, None) and a
    note when the evaluation settings differ (``settings``, a hash of ``evaluation.*``): metrics scored
    another way (other folds, another LR C rule) are not comparable, so the loss gate decides alone.
    A champion gated on both MRNet features is held to the challenger's Table 2 columns only."""
    new, old = new or {}, old or {}
    if old.get("gated") and new.get("gated") and new.get("settings") != old.get("settings"):
        return (None, None), (f"downstream metrics not compared: the evaluation settings changed since the champion "
                              f"({old.get('settings') or 'before settings were recorded'} → {new.get('settings')}); "
                              "the loss gate decides")
    held = old.get("gated")
    if held and new.get("features"):
        held = {k: v for k, v in held.items() if table2_key(k, new["features"])}
    return (new.get("gated"), held), None


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
        retired = retired_pairs(challenger)
        return {"promote": True, "rows": _rows(new, {}, cfg, retired),
                "aggregate": {"challenger": _mean(informative(v) for k, v in new.items() if k not in retired)},
                "reasons": ["no champion yet: the first complete release becomes champion"]}
    old = final_losses(champion)
    retired = retired_pairs(challenger) | retired_pairs(champion)
    se = final_losses(champion, "se")
    reasons = []
    missing_pgs = sorted(set(champion["pgs"]) - set(challenger["pgs"]))
    if missing_pgs:
        skipped = challenger.get("skipped") or {}
        why = "; ".join(f"{pg}: {skipped[pg]}" for pg in missing_pgs if pg in skipped)
        reasons.append(f"partial: PGs {missing_pgs} of the champion are not in this release"
                       + (f" (not trained: {why})" if why else ""))
    rows = _rows(new, old, cfg, retired, se)
    for row in rows:
        if row["verdict"] == "missing" and row["pg"] not in missing_pgs:
            reasons.append(f"{row['pg']}.{row['task']}: task missing (champion {row['champion']:.4f})")
        elif row["verdict"] == "regressed":
            counted = "" if row["counted"] == row["delta"] else ", above the prior counted as 1.0"
            reasons.append(f"{row['pg']}.{row['task']}: loss {row['champion']:.4f} → {row['challenger']:.4f} "
                           f"(+{row['counted']:.4f}{counted} > {_why(row['limit'], cfg.tolerance, cfg.noise_z)})")
    shared = [k for k in old if k in new and k not in retired]
    aggregate = {"champion": _mean(informative(old[k]) for k in shared),
                 "challenger": _mean(informative(new[k]) for k in shared)}
    agg_se = noise(se, shared)
    aggregate["limit"] = limit(cfg.aggregate_tolerance, cfg.noise_z, None if agg_se is None else agg_se / len(shared))
    if shared and aggregate["challenger"] > aggregate["champion"] + aggregate["limit"]:
        reasons.append(f"aggregate loss {aggregate['champion']:.4f} → {aggregate['challenger']:.4f} "
                       f"(worse by more than {_why(aggregate['limit'], cfg.aggregate_tolerance, cfg.noise_z)})")
    promote = not reasons
    if promote:
        reasons.append(f"no (PG, task) loss rose beyond its limit (tolerance {cfg.tolerance}, or its validation noise "
                       f"× {cfg.noise_z:g} where more); aggregate {aggregate['champion']:.4f} → {aggregate['challenger']:.4f}")
    if n_retired := sum(r["verdict"] == "retired" for r in rows):
        reasons.append(f"{n_retired} (PG, task) pairs retired in either release (the task overfit): shown, not gated")
    return {"promote": promote, "rows": rows, "aggregate": aggregate, "reasons": reasons}


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _why(bound: float, tolerance: float, z: float) -> str:
    return f"tolerance {tolerance}" if bound <= tolerance else f"{bound:.4f} = {z:g} × its validation noise"


def _rows(new: dict, old: dict, cfg: GateConfig, retired: set = frozenset(), se: dict | None = None) -> list[dict]:
    rows = []
    for pg, task in sorted(set(new) | set(old)):
        a, b = old.get((pg, task)), new.get((pg, task))
        bound = limit(cfg.tolerance, cfg.noise_z, noise(se or {}, [(pg, task)]))
        if b is None:
            verdict = "missing"
        elif (pg, task) in retired:
            verdict = "retired"
        elif a is None:
            verdict = "new"
        else:
            verdict = "regressed" if informative(b) - informative(a) > bound else ("improved" if b < a else "held")
        both = a is not None and b is not None
        rows.append({"pg": pg, "task": task, "champion": a, "challenger": b, "delta": b - a if both else None,
                     "counted": informative(b) - informative(a) if both else None, "limit": bound, "verdict": verdict})
    return rows


def sample_vectors(uri: str, n: int) -> tuple[list[str], np.ndarray]:
    """The ``n`` product ids of an embedding dataset with the smallest stability hash (stable across
    releases) and their vectors, read batch by batch: memory holds the sample, not the dataset."""
    from mrnet.encoder.embed import embedding_batches

    threshold = smallest_rank((hash_rank(df["product_id"], 0, "stability") for df, _ in embedding_batches(uri)), n)
    ids, xs = [], []
    for df, x in embedding_batches(uri):
        keep = np.ones(len(df), bool) if threshold is None else hash_rank(df["product_id"], 0, "stability") <= threshold
        ids += df["product_id"][keep].tolist()
        xs.append(x[keep])
    return ids, np.concatenate(xs) if xs else np.zeros((0, 0), np.float32)


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean |kNN_a(i) ∩ kNN_b(i)| / k over rows, cosine similarity, self excluded (retrieval.knn:
    blocked, so a large ``gate.stability_sample`` never builds an N×N matrix)."""
    self_row = np.arange(len(a))
    _, na = knn(a, a, k, "cosine", exclude=self_row)
    _, nb = knn(b, b, k, "cosine", exclude=self_row)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(na, nb)]))


def stability(champion_embeddings: dict[str, str], challenger_embeddings: dict[str, str], cfg: GateConfig) -> dict[str, float]:
    """Per-PG k-NN overlap@k between the champion's and the challenger's embeddings of the same
    fixed product sample, plus their mean as ``mean``. The sample is the ``gate.stability_sample`` ids
    of both with the smallest stability hash: drawn from the challenger's 2x smallest, which hold them
    whenever at least half of those are in the champion too (a weekly catalog keeps most products)."""
    from mrnet.encoder.embed import embedding_batches

    out = {}
    for pg in sorted(set(champion_embeddings) & set(challenger_embeddings)):
        new_ids, x_new = sample_vectors(challenger_embeddings[pg], 2 * cfg.stability_sample)
        old = {pid: row for df, x in embedding_batches(champion_embeddings[pg], ids=new_ids)
               for pid, row in zip(df["product_id"], x)}
        common = [i for i, pid in enumerate(new_ids) if pid in old]
        common = [common[j] for j in np.argsort(hash_rank([new_ids[i] for i in common], 0, "stability"),
                                                kind="stable")[:cfg.stability_sample]]
        if len(common) <= cfg.stability_k:
            continue
        a = np.stack([old[new_ids[i]] for i in common])
        out[pg] = knn_overlap(a, x_new[common], cfg.stability_k)
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


def table(decision: dict, stable: dict[str, float] | None = None, k: int = 10) -> str:
    """Champion vs challenger, side by side, then the decision and its reasons."""
    def fmt(v):
        return "–" if v is None else f"{v:.4f}"

    lines = [f"{'pg':<24} {'task':<12} {'champion':>9} {'challenger':>10} {'delta':>8} {'limit':>7}  verdict"]
    for r in decision["rows"]:
        delta = "–" if r["delta"] is None else f"{r['delta']:+.4f}"
        bound = "–" if r.get("limit") is None else f"{r['limit']:.4f}"
        lines.append(f"{r['pg']:<24} {r['task']:<12} {fmt(r['champion']):>9} {fmt(r['challenger']):>10} "
                     f"{delta:>8} {bound:>7}  {r['verdict']}")
    agg = decision.get("aggregate") or {}
    lines.append(f"\naggregate normalized val loss (each capped at the prior, 1.0): champion {fmt(agg.get('champion'))}, "
                 f"challenger {fmt(agg.get('challenger'))}, limit {fmt(agg.get('limit'))}")
    lines.append("limit: how far a loss may rise, gate.tolerance or gate.noise_z × its validation noise (√2 × the "
                 "champion's se) where more; a loss above 1.0 (the prior) counts as 1.0; retired: the task overfit, "
                 "shown, not gated")
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
