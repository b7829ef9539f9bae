"""embed.dtype float16 against float32 (a benchmark, not a test; docs/SCALING.md): bytes, read
time and the downstream evaluation of one finished run's release embeddings, side by side.

Each PG's embeddings are rewritten both ways into a temp folder (the same vectors, float32 and
float16), read back with ``read_embeddings`` (median of ``--repeat`` reads each, alternating), and
the run's evaluation (paper §4, the run's own config) is scored on both.

Usage: .venv/bin/python bench/float16.py RUN_FOLDER [--repeat 5] [--no-eval]
e.g.   .venv/bin/python bench/float16.py artifacts/demo/runs/manual__2026-12-02T…
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrnet.encoder.embed import read_embeddings, write_embeddings  # noqa: E402
from mrnet.io import storage  # noqa: E402


def rewrite(release: dict, out: Path) -> dict[str, dict[str, str]]:
    """{dtype: {pg: file}}: every PG's release embeddings as one Parquet file per dtype."""
    files = {"float32": {}, "float16": {}}
    for pg, uri in release["embeddings"].items():
        meta, x = read_embeddings(uri, ("product_id", "model_version"))
        for dtype in files:
            files[dtype][pg] = write_embeddings(str(out / dtype / f"{pg}.parquet"), meta["product_id"], pg,
                                                str(meta["model_version"].iloc[0]), x, dtype)
    return files


def read_seconds(files: dict[str, str]) -> float:
    t0 = time.perf_counter()
    for uri in files.values():
        read_embeddings(uri)
    return time.perf_counter() - t0


def evaluate(run_folder: str, files: dict[str, str]) -> dict[str, float]:
    from mrnet.evaluation import score
    from mrnet.run.context import cached_catalog, load_run, read_stage

    run = load_run(str(Path(run_folder) / "run.json"))
    catalog = cached_catalog(read_stage(run, "validate")["uri"])
    cfg = run.cfg.model_copy(update={"evaluation": run.cfg.evaluation.model_copy(update={"extras": []})})
    result = score.evaluate(cfg, catalog, files, None, None, False)  # MRNet and TF-IDF only: what changes
    return {f"{r['task']}.{r['classifier']}": round(r["mean"], 4) for r in result["rows"] if r["feature"] == "pg"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args()
    release = json.loads(storage.read_text(str(Path(args.run) / "release.json")))
    with tempfile.TemporaryDirectory() as tmp:
        files = rewrite(release, Path(tmp))
        sizes = {d: sum(Path(f).stat().st_size for f in fs.values()) for d, fs in files.items()}
        times = {d: [] for d in files}
        for _ in range(args.repeat):
            for dtype in files:
                times[dtype].append(read_seconds(files[dtype]))
        products = sum(len(read_embeddings(f)[0]) for f in files["float32"].values())
        out = {"run": args.run, "products": products, "pgs": len(files["float32"]),
               "bytes": sizes, "bytes_ratio": round(sizes["float16"] / sizes["float32"], 3),
               "read_s_median": {d: round(statistics.median(t), 3) for d, t in times.items()},
               "read_ratio": round(statistics.median(times["float16"]) / statistics.median(times["float32"]), 3)}
        if not args.no_eval:
            scores = {d: evaluate(args.run, fs) for d, fs in files.items()}
            out["eval"] = scores
            diffs = [abs(scores["float16"][k] - v) for k, v in scores["float32"].items() if v == v]  # NaN: a task too small
            out["eval_max_abs_diff"] = max(diffs, default=None)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
