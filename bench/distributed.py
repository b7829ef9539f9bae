"""Benchmark (not a test): what one task costs on the native Celery cluster of
tests/test_distributed.py (the docker-compose topology without Docker), for choosing the
embedding shard size (docs/SCALING.md).

    .venv/bin/python bench/distributed.py --repeats 3

Each repeat runs that test (fresh Postgres databases, Redis, scheduler, a default and a gpu
Celery worker, MLflow server, S3 endpoint), which triggers a tiny ``mrnet_retrain`` through the
REST API; the test leaves the run's task instances in a file and this script reads them.
Per task id, medians over the repeats of: the task's run time (start → end on the worker, which
includes starting the task process and importing mrnet), the wait from queued to start, and
how many instances ran. A tiny shard does almost no work, so an ``embed_shard`` instance's run
time is close to the fixed cost every shard pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _one(path: Path) -> dict[str, dict[str, list[float]]]:
    env = os.environ | {"MRNET_BENCH_TIS": str(path), "MRNET_REQUIRE_POSTGRES": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_distributed.py"], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    out: dict[str, dict[str, list[float]]] = {}
    for ti in json.loads(path.read_text()):
        row = out.setdefault(ti["task_id"], {"run_s": [], "wait_s": []})
        row["run_s"].append((_t(ti["end_date"]) - _t(ti["start_date"])).total_seconds())
        row["wait_s"].append((_t(ti["start_date"]) - _t(ti["queued_when"])).total_seconds())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(_one(Path(tmp) / f"tis-{i}.json"))
            print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"machine: {os.cpu_count()} CPU cores; tiny mrnet_retrain on the native Celery cluster; "
          f"medians over {args.repeats} runs of each task's instances\n")
    print("| task | instances per run | run time, s (median) | queued → start, s (median) |\n|---|---|---|---|")
    for task in runs[0]:
        run_s = [x for r in runs for x in r[task]["run_s"]]
        wait_s = [x for r in runs for x in r[task]["wait_s"]]
        print(f"| {task} | {len(runs[0][task]['run_s'])} | {statistics.median(run_s):.1f} | "
              f"{statistics.median(wait_s):.1f} |")


if __name__ == "__main__":
    main()
