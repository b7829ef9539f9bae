"""embed.dtype float16 against float32 (a benchmark, not a test; docs/SCALING.md): bytes, read
time and the downstream evaluation of one finished run's release embeddings, side by side.

Each PG's embeddings and the PG-agnostic ones are rewritten both ways into a temp folder (the
same vectors, float32 and float16) and read back with ``read_embeddings``: medians of ``--repeat``
writes and reads each, alternating. The run's evaluation (paper §4, the run's own config, MRNet
PG-specific against TF-IDF) is scored on both.

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


def load(release: dict) -> dict[str, tuple]:
    """{name: (ids, version, vectors)}: every PG's release embeddings, and the PG-agnostic ones."""
    uris = dict(release["embeddings"]) | ({"agnostic": release["agnostic"]["embeddings"]} if "agnostic" in release else {})
    out = {}
    for name, uri in uris.items():
        meta, x = read_embeddings(uri, ("product_id", "model_version"))
        out[name] = (meta["product_id"], str(meta["model_version"].iloc[0]), x)
    return out


def rewrite(data: dict[str, tuple], out: Path, dtype: str) -> tuple[dict[str, str], float]:
    """({name: file}, seconds): the vectors written as ``dtype``, one Parquet file each."""
    t0, files = time.perf_counter(), {}
    for name, (ids, version, x) in data.items():
        files[name] = write_embeddings(str(out / dtype / f"{name}.parquet"), ids, name, version, x, dtype)
    return files, time.perf_counter() - t0


def read_seconds(files: dict[str, str]) -> float:
    t0 = time.perf_counter()
    for uri in files.values():
        read_embeddings(uri)
    return time.perf_counter() - t0


def evaluate(run_folder: str, files: dict[str, str]) -> dict[str, float]:
    from mrnet.data.catalog import read_catalog
    from mrnet.evaluation import score
    from mrnet.run.context import load_run, read_stage

    run = load_run(str(Path(run_folder) / "run.json"))
    catalog = read_catalog(read_stage(run, "validate")["uri"])
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
        data = load(release)
        dtypes = ("float32", "float16")
        files, writes, reads = {}, {d: [] for d in dtypes}, {d: [] for d in dtypes}
        for _ in range(args.repeat):  # alternating, so drift in the machine's speed hits both alike
            for dtype in dtypes:
                files[dtype], seconds = rewrite(data, Path(tmp), dtype)
                writes[dtype].append(seconds)
                reads[dtype].append(read_seconds(files[dtype]))
        pg_files = {d: {k: v for k, v in fs.items() if k != "agnostic"} for d, fs in files.items()}
        sizes = {d: {k: Path(f).stat().st_size for k, f in fs.items()} for d, fs in files.items()}
        products = sum(len(ids) for name, (ids, _, _) in data.items() if name != "agnostic")

        def median(t):
            return round(statistics.median(t), 3)

        out = {"run": args.run, "products": products, "pgs": len(pg_files["float32"]),
               "bytes_pg": {d: sum(v for k, v in s.items() if k != "agnostic") for d, s in sizes.items()},
               "bytes_agnostic": {d: s.get("agnostic") for d, s in sizes.items()},
               "write_s_median": {d: median(t) for d, t in writes.items()},
               "read_s_median": {d: median(t) for d, t in reads.items()},
               "write_ratio": round(statistics.median(writes["float16"]) / statistics.median(writes["float32"]), 3),
               "read_ratio": round(statistics.median(reads["float16"]) / statistics.median(reads["float32"]), 3)}
        out["bytes_ratio_pg"] = round(out["bytes_pg"]["float16"] / out["bytes_pg"]["float32"], 3)
        if not args.no_eval:
            scores = {d: evaluate(args.run, fs) for d, fs in pg_files.items()}
            out["eval"] = scores
            diffs = [abs(scores["float16"][k] - v) for k, v in scores["float32"].items() if v == v]  # NaN: a task too small
            out["eval_max_abs_diff"] = max(diffs, default=None)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
