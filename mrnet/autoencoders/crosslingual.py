"""Cross-language multimodal autoencoder (paper §5): project locale B's embeddings into A's.

Given P paired items with embeddings x_A (from MRNet-A) and x_B (from MRNet-B), the
autoencoder has input [x_A, x_B] (d_A + d_B), one hidden layer (256) and output
[x_A, x_B], and learns from three kinds of examples per pair (``three_part_examples``):

    (1) [x_A, 0] → [0, x_B]     (2) [0, x_B] → [x_A, 0]     (3) [x_A, x_B] → [x_A, x_B]

in batches of 256 drawn at random from all 3P examples. Projection B → A is (2): feed
[0, x_B] and read the A half of the output. Embeddings are standardized per dimension with
the training pairs' mean and deviation first, so "0" means "this locale is absent" and
both locales weigh the same; the statistics are stored in the model file.

Evaluation (``evaluate``): every held-out B item is a query, every held-out A item a
candidate (cosine similarity in A's standardized space); recall@1, recall@10 and MRR of
the true partner, against: random ranking (exact expectation), no projection (raw cosine
across the two unaligned spaces), least squares (x_B W + b ≈ x_A) and orthogonal
Procrustes (centered, W orthogonal), both fit on the same training pairs.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from mrnet.config.autoencoders import CrossLingualConfig
from mrnet.data.sample import hash_sample
from mrnet.encoder.model import adamw, load_weights, read_meta, save_model
from mrnet.evaluation import retrieval
from mrnet.io import storage
from mrnet.io.progress import bar as progress_bar

log = logging.getLogger(__name__)


class CrossLingualAE(nn.Module):
    """[x_A, x_B] (d_A + d_B) → tanh hidden (256) → [x̂_A, x̂_B] (d_A + d_B)."""

    def __init__(self, d_a: int, d_b: int, hidden: int = 256):
        super().__init__()
        self.d_a, self.d_b, self.hidden = d_a, d_b, hidden
        self.encoder = nn.Linear(d_a + d_b, hidden)   # (d_A + d_B) → hidden
        self.decoder = nn.Linear(hidden, d_a + d_b)   # hidden → (d_A + d_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.encoder(x)))   # (B, d_A + d_B)

    def project_b_to_a(self, x_b: torch.Tensor) -> torch.Tensor:
        """x_B (N, d_B) → its A-space image (N, d_A): input [0, x_B], output's A half."""
        zeros = x_b.new_zeros(len(x_b), self.d_a)
        return self(torch.cat([zeros, x_b], dim=1))[:, :self.d_a]


def three_part_examples(x_a: np.ndarray, x_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """§5's training set for P pairs: (inputs (3P, d_A+d_B), targets (3P, d_A+d_B)), parts
    in order (1) [x_A,0]→[0,x_B], (2) [0,x_B]→[x_A,0], (3) [x_A,x_B]→[x_A,x_B]."""
    if len(x_a) != len(x_b):
        raise ValueError(f"paired embeddings differ in length: {len(x_a)} A vs {len(x_b)} B")
    za, zb = np.zeros_like(x_a), np.zeros_like(x_b)
    both = np.concatenate([x_a, x_b], 1)
    inputs = np.concatenate([np.concatenate([x_a, zb], 1), np.concatenate([za, x_b], 1), both])
    targets = np.concatenate([np.concatenate([za, x_b], 1), np.concatenate([x_a, zb], 1), both])
    return inputs.astype(np.float32), targets.astype(np.float32)


def standardizer(x: np.ndarray) -> dict:
    return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-6).tolist()}


def standardize(x: np.ndarray, stats: dict) -> np.ndarray:
    return ((x - np.asarray(stats["mean"], np.float32)) / np.asarray(stats["std"], np.float32)).astype(np.float32)


def train_ae(cfg: CrossLingualConfig, x_a: np.ndarray, x_b: np.ndarray, seed: int, device: str = "cpu",
             progress: bool = True, on_epoch=None) -> tuple[CrossLingualAE, list[dict]]:
    """Train on standardized paired embeddings; batches of ``batch_size`` drawn at random."""
    torch.manual_seed(seed)
    inputs, targets = (torch.from_numpy(a).to(device) for a in three_part_examples(x_a, x_b))
    model = CrossLingualAE(x_a.shape[1], x_b.shape[1], cfg.hidden).to(device)
    opt = adamw(model.parameters(), cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    steps, history = math.ceil(len(inputs) / cfg.batch_size), []
    for epoch in range(1, cfg.epochs + 1):
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(inputs), generator=gen).to(device)
        for s in progress_bar(range(steps), desc=f"cross-lingual AE epoch {epoch}/{cfg.epochs}", leave=False,
                              progress=progress):
            rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = (model(inputs[rows]) - targets[rows]).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        history.append({"epoch": epoch, "train_loss": total / len(inputs),
                        "seconds": round(time.perf_counter() - t0, 3)})
        if progress and (epoch % max(1, cfg.epochs // 10) == 0 or epoch == cfg.epochs):  # ~10 lines, no \r
            log.info("[crosslingual] epoch %d/%d: train loss %.4f, %.2f s", epoch, cfg.epochs,
                     history[-1]["train_loss"], history[-1]["seconds"])
        if on_epoch is not None:
            on_epoch(history[-1])
    return model.cpu().eval(), history


def least_squares(x_b: np.ndarray, x_a: np.ndarray, ridge: float = 1e-3):
    """x_B W + b ≈ x_A (ridge-stabilized normal equations); returns the map as a function."""
    xb1 = np.concatenate([x_b, np.ones((len(x_b), 1), x_b.dtype)], 1)
    w = np.linalg.solve(xb1.T @ xb1 + ridge * np.eye(xb1.shape[1]), xb1.T @ x_a)
    return lambda q: np.concatenate([q, np.ones((len(q), 1), q.dtype)], 1) @ w


def procrustes(x_b: np.ndarray, x_a: np.ndarray):
    """Orthogonal W = argmin ||(x_B − μ_B) W − (x_A − μ_A)|| (SVD); needs d_A == d_B."""
    if x_b.shape[1] != x_a.shape[1]:
        return None
    mu_a, mu_b = x_a.mean(0), x_b.mean(0)
    u, _, vt = np.linalg.svd((x_b - mu_b).T @ (x_a - mu_a))
    w = u @ vt
    return lambda q: (q - mu_b) @ w + mu_a


def evaluate(model: CrossLingualAE, tr_a, tr_b, te_a, te_b, truth: np.ndarray) -> dict[str, dict]:
    """Retrieval of each held-out B query's partner among the held-out A candidates, per method.
    ``te_a``: the unique held-out A candidates; ``te_b`` (Q, d_B) queries; ``truth`` (Q,) rows of te_a."""
    with torch.inference_mode():
        ae = model.project_b_to_a(torch.from_numpy(te_b)).numpy()
    methods = {"autoencoder": ae, "least_squares": least_squares(tr_b, tr_a)(te_b)}
    if (proc := procrustes(tr_b, tr_a)) is not None:
        methods["procrustes"] = proc(te_b)
    if te_b.shape[1] == te_a.shape[1]:
        methods["no_projection"] = te_b
    out = {"random": retrieval.random_metrics(len(te_a))}
    for name, queries in methods.items():
        out[name] = retrieval.rank_metrics(retrieval.ranks(queries, te_a, truth, "cosine"))
    return out


def examples(model: CrossLingualAE, held: pd.DataFrame, cand: pd.DataFrame, te_a, te_b, truth, n: int,
             k: int = 5) -> list[dict]:
    """n held-out B items (a fixed hash sample of id_b) with their top-k A neighbours."""
    pick = hash_sample(held["id_b"], n, 0, "examples")
    with torch.inference_mode():
        projected = model.project_b_to_a(torch.from_numpy(te_b[pick])).numpy()
    _, idx = retrieval.knn(projected, te_a, k, "cosine")
    rank = retrieval.ranks(projected, te_a, truth[pick], "cosine")
    return [{"id_b": held["id_b"][i], "title_b": held["title_b"][i], "true_a": held["title_a"][i],
             "true_rank": int(r), "top": [{"title": cand["title_a"][j], "is_partner": bool(j == truth[i])} for j in row]}
            for i, row, r in zip(pick, idx, rank)]


def load(uri: str) -> tuple[CrossLingualAE, dict]:
    """The saved autoencoder, rebuilt from its own metadata (weights only)."""
    meta = read_meta(uri, "crosslingual_ae")
    return load_weights(CrossLingualAE(meta["d_a"], meta["d_b"], meta["hidden"]), uri), meta


# ------------------------------------------------------------------ the stage


class _Vectors:
    """A locale's embeddings, looked up by product id."""

    def __init__(self, uri: str):
        from mrnet.encoder.embed import read_embeddings

        df, self.x = read_embeddings(uri)
        self.ids = df["product_id"]
        self.row = pd.Series(np.arange(len(df)), index=self.ids)

    def __getitem__(self, ids) -> np.ndarray:
        return self.x[self.row.loc[list(ids)].to_numpy()]


def _inputs(cfg, out_dir: str):
    """Validated locale catalogs and clean pairs; quarantines written under ``out_dir``."""
    from mrnet.autoencoders import locales
    from mrnet.data.catalog import read_catalog
    from mrnet.data.merge import validate_catalog

    xl = cfg.crosslingual
    build = locales.builtin_inputs if xl.pairs.startswith("builtin:") else locales.file_inputs
    pairs, uri_a, uri_b, description = build(cfg, out_dir)
    catalogs, quarantined = {}, {}
    for side, loc, uri in (("a", xl.locale_a, uri_a), ("b", xl.locale_b, uri_b)):
        clean, summary = validate_catalog(uri, storage.join(out_dir, f"catalog_{side}"), [loc], xl.tasks,
                                          cfg.data.max_title_chars)
        catalogs[side], quarantined[f"catalog_{side}"] = read_catalog(clean), summary["rows_quarantined"]
    pairs, bad = locales.clean_pairs(pairs, set(catalogs["a"]["product_id"]), set(catalogs["b"]["product_id"]),
                                     xl.pairs)
    storage.write_parquet(bad, storage.join(out_dir, "pairs_quarantine.parquet"))
    quarantined["pairs"] = len(bad)
    return pairs, catalogs, quarantined, description


def run(cfg, out_dir: str, device: str = "cpu", progress: bool = True, on_epoch=None) -> tuple[str, dict]:
    """Locale models → paired embeddings → autoencoder → held-out retrieval report.
    Writes model, projected B embeddings, metrics.json, report.md, retrieval.png; returns
    (metrics.json uri, metrics)."""
    from mrnet.autoencoders import locales

    xl = cfg.crosslingual
    pairs, catalogs, quarantined, description = _inputs(cfg, out_dir)
    train_p, held, dropped = locales.train_pairs(pairs, locales.split_pairs(pairs, xl.test_fraction, cfg.train.seed))
    if len(train_p) < 10 or len(held) < 2:
        raise ValueError(f"crosslingual: {len(train_p)} training and {len(held)} held-out pairs after cleaning "
                         f"({quarantined['pairs']} quarantined, see {out_dir}/pairs_quarantine.parquet); need ≥10 and ≥2")
    held_ids = {"a": set(held["id_a"]), "b": set(held["id_b"])}
    models = {side: locales.train_locale(cfg, loc, catalogs[side], held_ids[side], out_dir)
              for side, loc in (("a", xl.locale_a), ("b", xl.locale_b))}
    leaks = {f"held_out_in_training_{side}": len(models[side]["train_ids"] & held_ids[side]) for side in "ab"}
    leaks["held_out_in_ae_pairs"] = int(train_p["id_a"].isin(held_ids["a"]).sum() + train_p["id_b"].isin(held_ids["b"]).sum())
    if any(leaks.values()):
        raise RuntimeError(f"crosslingual: held-out items reached training: {leaks}")
    vec_a, vec_b = _Vectors(models["a"]["embeddings"]), _Vectors(models["b"]["embeddings"])
    raw_a, raw_b = vec_a[train_p["id_a"]], vec_b[train_p["id_b"]]
    stats = {"a": standardizer(raw_a), "b": standardizer(raw_b)}
    tr_a, tr_b = standardize(raw_a, stats["a"]), standardize(raw_b, stats["b"])
    model, history = train_ae(xl, tr_a, tr_b, cfg.train.seed, device, progress, on_epoch)
    cand = held.drop_duplicates("id_a").reset_index(drop=True)
    te_a, te_b = standardize(vec_a[cand["id_a"]], stats["a"]), standardize(vec_b[held["id_b"]], stats["b"])
    truth = cand.reset_index().set_index("id_a").loc[held["id_a"], "index"].to_numpy()
    metrics = evaluate(model, tr_a, tr_b, te_a, te_b, truth)
    meta = {"kind": "crosslingual_ae", "d_a": model.d_a, "d_b": model.d_b, "hidden": model.hidden,
            "locale_a": xl.locale_a, "locale_b": xl.locale_b, "standardize": stats, "config": xl.model_dump(mode="json"),
            "locale_models": {xl.locale_a: models["a"]["model"], xl.locale_b: models["b"]["model"]}}
    model_uri = save_model(model, meta, storage.join(out_dir, "crosslingual_ae.safetensors"))
    projected = _write_projection(model, model_uri, vec_b, stats["b"], xl.locale_b, storage.join(
        out_dir, f"embeddings_{xl.locale_b}_in_{xl.locale_a}.parquet"))
    result = {"data": description, "locale_a": xl.locale_a, "locale_b": xl.locale_b, "model": model_uri,
              "projected_embeddings": projected,
              "locale_models": {loc: {k: v for k, v in models[s].items() if k not in ("history", "train_ids")}
                                for s, loc in (("a", xl.locale_a), ("b", xl.locale_b))},
              "pairs": {"usable": len(pairs), "train": len(train_p), "held_out": len(held), "candidates": len(cand),
                        "dropped_overlap": dropped, "quarantined": quarantined},
              "leak_check": leaks, "retrieval": metrics, "history": history,
              "examples": examples(model, held, cand, te_a, te_b, truth, xl.examples)}
    return _write_report(result, out_dir), result


def _write_projection(model: CrossLingualAE, model_uri: str, vec_b: _Vectors, stats: dict, locale_b: str,
                      uri: str) -> str:
    """Every B item projected into A's (standardized) space, in encoder/embed.py's Parquet schema."""
    from mrnet.encoder.embed import model_version, write_embeddings

    with torch.inference_mode():
        x = model.project_b_to_a(torch.from_numpy(standardize(vec_b.x, stats))).numpy()
    return write_embeddings(uri, vec_b.ids, locale_b, model_version(model_uri), x)


def verdict(metrics: dict[str, dict]) -> str:
    """One honest line: does the autoencoder beat the best linear map on MRR?"""
    ae = metrics["autoencoder"]["mrr"]
    linear = max((m for m in ("least_squares", "procrustes") if m in metrics), key=lambda m: metrics[m]["mrr"])
    better = "beats" if ae > metrics[linear]["mrr"] else "does NOT beat"
    return (f"The autoencoder {better} the strongest linear baseline ({linear}) on held-out MRR: "
            f"{ae:.3f} vs {metrics[linear]['mrr']:.3f} (random: {metrics['random']['mrr']:.3f}).")


def _write_report(result: dict, out_dir: str) -> str:
    m, p = result["retrieval"], result["pairs"]
    lines = [f"# Cross-language retrieval: {result['locale_b']} → {result['locale_a']} (paper §5)", "",
             f"Data: {result['data']}.", "",
             f"Pairs: {p['usable']} usable ({p['quarantined']['pairs']} quarantined), {p['train']} train, "
             f"{p['held_out']} held out (never trained on; {p['dropped_overlap']} training pairs dropped for sharing "
             f"an id), {p['candidates']} {result['locale_a']} candidates. Leak check: {result['leak_check']}.", "",
             "| method | recall@1 | recall@10 | MRR | median rank |", "|---|---|---|---|---|"]
    for name, row in m.items():
        lines.append(f"| {name} | {row['recall_at_1']:.3f} | {row['recall_at_10']:.3f} | {row['mrr']:.3f} | "
                     f"{row['median_rank']:.0f} |")
    lines += ["", verdict(m), "", f"## Examples: a held-out {result['locale_b']} item and its top-5 "
              f"{result['locale_a']} neighbours (autoencoder projection; ✓ = the true partner)", ""]
    for ex in result["examples"]:
        lines.append(f"- **{ex['title_b']}** (partner: {ex['true_a']}, rank {ex['true_rank']})")
        lines += [f"  {i}. {t['title']}{' ✓' if t['is_partner'] else ''}" for i, t in enumerate(ex["top"], 1)]
    storage.write_text(storage.join(out_dir, "report.md"), "\n".join(lines) + "\n")
    _plot(m, storage.join(out_dir, "retrieval.png"))
    uri = storage.join(out_dir, "metrics.json")
    storage.write_text(uri, json.dumps(result, indent=2, default=str))
    return uri


def _plot(metrics: dict[str, dict], uri: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, keys = list(metrics), ["recall_at_1", "recall_at_10", "mrr"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for j, key in enumerate(keys):
        ax.bar(np.arange(len(names)) + (j - 1) * 0.27, [metrics[n][key] for n in names], 0.27, label=key)
    ax.set_xticks(np.arange(len(names)), names, rotation=15)
    ax.set_ylabel("held-out retrieval")
    ax.legend()
    fig.tight_layout()
    with storage.atomic_path(uri, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
