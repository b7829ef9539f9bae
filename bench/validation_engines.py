"""Benchmark (not a test): the validation merge's engine (docs/DATA.md, docs/SCALING.md).

The merge is the part of validation an out-of-core engine could take over: find the ids seen before (file
order, then row order) among every file's checked rows, and write the clean rows sorted by PG into one
Parquet file. The row checks before it are Python per cell whatever engine feeds them, so they are not
compared here. Three engines do the same merge on the same staged rows, each in its own process, in
``--repeats`` interleaved rounds (medians, and each engine's time as a ratio to pyarrow's):

- ``pyarrow``: mrnet's own (``data/merge.merge``): hash buckets of ids, pyarrow sorts, row groups copied PG by PG;
- ``duckdb``: one ``COPY (… QUALIFY row_number() OVER (PARTITION BY product_id …) = 1 ORDER BY …)``, with a
  ``memory_limit`` and spilling to disk;
- ``polars``: a lazy scan, ``unique(keep="first", maintain_order=True)``, a stable sort, ``sink_parquet``.

DuckDB and Polars are not project dependencies: install them into a folder of their own and point ``--engines``
at it (``pip install --target .scale/engines duckdb polars``). Usage::

    .venv/bin/python bench/validation_engines.py stage --catalog .scale/c10m --out .scale/staged10m
    .venv/bin/python bench/validation_engines.py run --staged .scale/staged10m --engines .scale/engines
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def stage(args) -> None:
    """Check every file of a catalog (data/staging.check_part) and keep the staging folder for the engines."""
    from mrnet.config.schema import load_config
    from mrnet.data import staging
    from mrnet.data.pgs import mapped_pgs

    cfg = load_config(REPO / "configs" / "demo.yaml")
    out = str(Path(args.out).resolve())
    record = staging.plan(str(Path(args.catalog).resolve()), out, cfg.data.bucket_bytes)
    t0 = time.perf_counter()
    for i in range(len(record["files"])):
        staging.check_part(record, staging.part_id(i), out, mapped_pgs(cfg), cfg.tasks, cfg.data.max_title_chars)
    print(f"checked {len(record['files'])} file(s) in {time.perf_counter() - t0:.1f} s → {out}/staging")


ENGINES = {
    "pyarrow": """
import json, sys
from pathlib import Path
from mrnet.data import merge
out = sys.argv[1]
record = json.loads((Path(out) / "staging" / "plan.json").read_text())
uri, summary = merge.merge(out, record)
print(summary["rows_used"])
""",
    "duckdb": """
import sys, duckdb
out = sys.argv[1]
con = duckdb.connect()
con.execute("SET memory_limit='2GB'; SET threads=2; SET temp_directory='" + out + "/duck_tmp'; SET preserve_insertion_order=false")
con.execute(f'''COPY (SELECT * EXCLUDE (_row, _part, filename) FROM (
    SELECT *, regexp_extract(filename, 'part-([0-9]+)', 1)::INT AS _part FROM read_parquet('{out}/staging/part-*/clean-*.parquet',
    filename=true, union_by_name=true))
  QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY _part, _row) = 1
  ORDER BY product_group, _part, _row) TO '{out}/catalog.parquet' (FORMAT parquet, ROW_GROUP_SIZE 100000)''')
print(con.execute(f"SELECT count(*) FROM read_parquet('{out}/catalog.parquet')").fetchone()[0])
""",
    "polars": """
import sys, polars as pl
out = sys.argv[1]
frame = pl.scan_parquet(f"{out}/staging/part-*/clean-*.parquet", include_file_paths="filename")
frame = frame.with_columns(pl.col("filename").str.extract(r"part-([0-9]+)", 1).cast(pl.Int32).alias("_part"))
frame = frame.sort(["_part", "_row"]).unique(subset="product_id", keep="first", maintain_order=True)
frame.sort("product_group", maintain_order=True).drop(["_part", "_row", "filename"]).sink_parquet(
    f"{out}/catalog.parquet", row_group_size=100_000)
print(pl.scan_parquet(f"{out}/catalog.parquet").select(pl.len()).collect().item())
""",
}


def once(name: str, code: str, staged: Path, engines: str) -> dict:
    """One engine on a fresh copy of the staged rows, in its own process: wall time, peak RSS, rows kept."""
    work = staged.parent / f"engine-{name}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(staged / "staging", work / "staging")
    wrapped = ("import resource, sys\nsys.path[:0] = [" + repr(str(REPO)) + ", " + repr(str(engines)) + "]\n"
               + code + "\nprint('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapped, str(work)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    lines = out.stdout.split()
    return {"seconds": seconds, "peak_rss_mb": int(lines[-1]) / 1024, "rows": int(lines[-3])}


def run(args) -> None:
    """``--repeats`` rounds, the engines interleaved within each; medians, and each engine's time as a ratio
    to pyarrow's (mrnet's own, the reference)."""
    runs = {name: [] for name in ENGINES}
    for r in range(args.repeats):
        for name, code in ENGINES.items():
            runs[name].append(once(name, code, Path(args.staged).resolve(), args.engines))
            print(r, name, runs[name][-1], flush=True)
    results = {}
    for name, got in runs.items():
        ok = [g for g in got if "error" not in g]
        results[name] = {"error": got[-1]["error"]} if not ok else {
            "seconds": round(statistics.median(g["seconds"] for g in ok), 1),
            "peak_rss_mb": round(statistics.median(g["peak_rss_mb"] for g in ok)), "rows": ok[-1]["rows"], "runs": len(ok)}
    reference = results["pyarrow"].get("seconds")
    for result in results.values():
        if reference and "seconds" in result:
            result["ratio_to_pyarrow"] = round(result["seconds"] / reference, 2)
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stage")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("run")
    p.add_argument("--staged", required=True)
    p.add_argument("--engines", default="")
    p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"stage": stage, "run": run}[args.cmd](args)


if __name__ == "__main__":
    main()
