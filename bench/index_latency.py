"""Benchmark (not a test): `mrnet neighbors` from a release's index (docs/NEIGHBORS.md, docs/SCALING.md).

On a built release (e.g. the one `bench/scale.py run` publishes), for one space:
- **cold**: a fresh process opens the space and answers one query by id; the time from before opening to the
  answer (the interpreter's imports excluded), and the process's peak RSS; medians of ``--cold-runs`` processes,
  each asking for another product;
- **warm**: the median latency of ``--queries`` queries by id in one process, and of title queries (cold start
  through the PG model, loaded once);
- **recall@10** of the same queries against exact search (one exact pass over the vectors for all of them; a neighbour
  as near as the exact 10th counts, as in the build's own measurement), and the
  reference measured side by side: an exact pass for one query alone, and per query within the batched pass.

Usage: ``.venv/bin/python bench/index_latency.py --release .scale/h10m/runs/scale/release.json --space agnostic``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
t_import = time.perf_counter()
import faiss, pyarrow.ipc  # noqa: F401  (imported on the first query otherwise)
from mrnet.release import neighbors
imports = time.perf_counter() - t_import
manifest = json.loads(open({release!r}).read())
t0 = time.perf_counter()
query, rows = neighbors.neighbors(manifest, k=10, space={space!r}, pg={pg!r}, product_id={pid!r})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - t0, "imports": imports, "peak_mb": peak, "method": query["method"],
                  "candidates": query["candidates"]}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True)
    parser.add_argument("--space", default="agnostic", help="agnostic, or pg/<pg>")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes, each with another product (median)")
    args = parser.parse_args()

    import numpy as np

    from mrnet.release import index, neighbors

    manifest = json.loads(Path(args.release).read_text())
    space = index.open_space(manifest["index"]["uri"], args.space)
    rows = np.unique(np.linspace(0, len(space) - 1, args.queries).astype(np.int64))
    picked = space.take(rows)
    pg = None if args.space == "agnostic" else args.space.split("/", 1)[1]
    colds = [json.loads(subprocess.run([sys.executable, "-c", COLD.format(
        repo=str(REPO), release=str(Path(args.release).resolve()), space="agnostic" if pg is None else "pg",
        pg=pg or picked["product_group"][i], pid=picked["product_id"][i])], capture_output=True, text=True,
        check=True).stdout.strip().splitlines()[-1]) for i in range(0, len(rows), max(1, len(rows) // args.cold_runs))]
    cold = {key: statistics.median(c[key] for c in colds) for key in ("seconds", "imports", "peak_mb")}
    by_id, found = [], []
    for pid, group in zip(picked["product_id"], picked["product_group"]):
        t0 = time.perf_counter()
        _, got = neighbors.neighbors(manifest, k=10, space="agnostic" if pg is None else "pg", pg=group, product_id=pid)
        by_id.append(time.perf_counter() - t0)
        found.append(got["distance"].to_numpy()[1:])
    titles = []
    for title, group in list(zip(picked["title"], picked["product_group"]))[:50]:
        if not title:
            continue
        t0 = time.perf_counter()
        neighbors.neighbors(manifest, k=10, space="agnostic" if pg is None else "pg", pg=group, title=title)
        titles.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.exact_top(space.vectors_path, space.vectors_at(rows[:1]), 11)
    exact_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth, _ = index.exact_top(space.vectors_path, space.vectors_at(rows), 10, exclude=rows)
    exact_s = (time.perf_counter() - t0) / len(rows)
    recall = [float(np.mean(f <= t[9] * (1 + 1e-6) + 1e-9)) for f, t in zip(found, truth)]
    result = {"space": args.space, "products": len(space), "kind": space.info["kind"], "queries": len(rows),
              "cold_open_and_query_ms": round(1000 * cold["seconds"], 1), "cold_imports_ms": round(1000 * cold["imports"]),
              "cold_peak_rss_mb": round(cold["peak_mb"]),
              "warm_by_id_ms_median": round(1000 * statistics.median(by_id), 2),
              "warm_by_id_ms_p95": round(1000 * float(np.percentile(by_id, 95)), 2),
              "warm_by_title_ms_median": round(1000 * statistics.median(titles), 2) if titles else None,
              "exact_scan_one_query_ms": round(1000 * exact_one, 1),
              "exact_scan_ms_per_query_in_a_batch": round(1000 * exact_s, 1), "recall_at_10": round(float(np.mean(recall)), 4),
              "speedup_vs_exact_scan_one_query": round(exact_one / statistics.median(by_id), 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
