"""A crash at every write of a run's end: SIGKILL at the k-th storage mutation of publish → build_index → promote →
gc, for every k, then the next steps a person (or Airflow's retry) would take, and five invariants.

The method is SQLite's crash tests and application-level crash-consistency checking (ALICE): count the
mutations (a file published by ``storage.atomic_path``, a delete, a lock created, a folder removed), replay the
sequence killing the process at each in turn, and check what every reader sees. After each kill:

1. right away, the champion pointer parses and every file of the champion is whole (nothing half-written is
   visible), and after recovery every reader names the same champion (the new release: the gate passes);
2. every release that was ever champion keeps every file its manifest names, bit for bit (``verify``);
3. no release manifest names a missing file;
4. no lock is left after the next command;
5. (MLflow runs left RUNNING: here tracking is off, to keep every k under a second. The alias moves with tracking
   are swept in tests/test_promotion_kill.py; a killed run's MLflow runs end with it (tests/test_reliability.py),
   and the next run ends those a kill after the gate decision left (tests/test_integrity.py).)

Recovery is what happens in production: Airflow retries the killed task and runs the rest (publish, build_index,
promote again: each rewrites its own outputs whole), the next gc finishes a killed one. The replay runs in one
fresh process that forks a child per kill (OpenMP is never started in the parent), so every k costs the work of
the end of a tiny run, not an interpreter start.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, run_params

pytestmark = pytest.mark.slow
PGS = ["watches", "beverages"]
LENIENT = ["gate.tolerance=10", "gate.aggregate_tolerance=10", "gate.eval_tolerance=10"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, fixture_catalog):
    """``home``: release r1 is champion; run r2 finished every stage before publish; r0 is an old run gc
    deletes. ``pristine``: a copy of it, put back before each kill."""
    from mrnet.run import local, stages

    base = tmp_path_factory.mktemp("crash")
    home = base / "home"
    params = run_params(home, fixture_catalog, pgs=PGS)
    params["overrides"] += ["tracking.enabled=false", "evaluation.enabled=false", "crosslingual.enabled=false", *LENIENT]
    local.run(params, run_id="r1")

    def stop(*args, **kwargs):
        raise Stop()

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Stop):
        mp.setattr(stages, "publish", stop)  # r2 runs every stage up to its release
        local.run(params, run_id="r2")
    old = home / "runs" / "r0"
    (old / "models" / "watches").mkdir(parents=True)
    shutil.copy(home / "runs" / "r1" / "models" / "watches" / "model.safetensors", old / "models" / "watches")
    (old / "run.json").write_text(json.dumps({"run_id": "r0", "started": 0}))
    (old / "gate.json").write_text(json.dumps({"promote": False}))
    shutil.copytree(home, base / "pristine", symlinks=True)
    return home, base / "pristine", params


def _config(params, *extra):
    from mrnet.config.schema import load_config

    return load_config(params["config"], params["overrides"] + list(extra), tiny=True)


def _end(home: Path, params: dict) -> None:
    """The end of run r2 as the DAG runs it, then the weekly gc."""
    from mrnet.run import stages, steps

    run_uri = str(home / "runs" / "r2" / "run.json")
    release = stages.publish(run_uri, str(home / "runs" / "r2" / "summary.json"), [])
    stages.promote(run_uri, stages.build_index(run_uri, release))
    steps.gc_step(_config(params, "retention.keep_last=1", "retention.keep_days=0"))


def _kill_at(k: int, log: Path) -> None:
    """Count storage mutations in this process; SIGKILL it at the k-th, after naming it in ``log``."""
    import contextlib

    from mrnet.io import storage

    count = [0]

    def point(what: str) -> None:
        count[0] += 1
        if count[0] == k:
            log.write_text(what)
            os.kill(os.getpid(), signal.SIGKILL)

    real_atomic = storage.atomic_path

    @contextlib.contextmanager
    def atomic_path(uri, suffix=""):
        with real_atomic(uri, suffix) as tmp:
            yield tmp
            point(f"publish {uri}")  # the temp file is written; the rename (or upload) is next

    def counted(name: str):
        real = getattr(storage, name)

        def wrapped(uri, *args, **kwargs):
            point(f"{name} {uri}")
            return real(uri, *args, **kwargs)
        return wrapped

    storage.atomic_path = atomic_path
    for name in ("delete", "create_once", "remove_empty_dirs"):
        setattr(storage, name, counted(name))


def _check(home: Path, params: dict) -> list[str]:
    """The invariants (module docstring) right after a kill, then after the recovery."""
    from mrnet.release.manifest import manifest_by_alias, read_manifest, repair_champion
    from mrnet.release.verify import verify_release

    cfg, problems = _config(params), []
    champion, _ = manifest_by_alias(cfg, "champion")
    if champion is None or champion["release"] not in ("r1", "r2"):
        problems.append(f"after the kill the champion is {champion and champion['release']}")
    elif damage := verify_release(champion, full=False)["damaged"]:
        problems.append(f"after the kill champion {champion['release']} has damaged files: {damage[:2]}")
    repair_champion(cfg, str(home), None)
    _end(home, params)  # Airflow's retry of the killed task and the tasks after it; the next gc
    champion, _ = manifest_by_alias(cfg, "champion")
    current = read_manifest(str(home / "releases" / "current.json"))
    if champion["release"] != "r2" or current["release"] != "r2":
        problems.append(f"after recovery the champion is {champion['release']} (current.json {current['release']})")
    for archived in (home / "releases").glob("*.json"):  # 2. every release that was ever champion, bit for bit
        if damage := verify_release(read_manifest(str(archived)))["damaged"]:
            problems.append(f"{archived.name}: {damage[:2]}")
    for manifest in (home / "runs").glob("*/release.json"):  # 3. no manifest names a missing file
        missing = [d for d in verify_release(read_manifest(str(manifest)), full=False)["damaged"] if d[1] == "missing"]
        if missing:
            problems.append(f"{manifest.parent.name}/release.json names missing files: {missing[:2]}")
    if locks := [p.name for p in (home / "locks").glob("*")] if (home / "locks").exists() else []:
        problems.append(f"locks left: {locks}")  # 4
    if (home / "runs" / "r0").exists():
        problems.append("gc did not finish deleting r0")
    return problems


def sweep(home: str, pristine: str, params_json: str, out: str) -> None:
    """In a fresh process: for k = 1, 2, …: put the home back, fork a child that runs the end and is killed at its
    k-th mutation, fork another that recovers and checks; stop at the first k the end survives."""
    import mrnet.release.gate, mrnet.release.index, mrnet.release.verify, mrnet.run.stages  # noqa: F401, E401
    # imported once here, so each fork pays only for the work (importing starts no OpenMP thread to fork over)

    home, pristine, params = Path(home), Path(pristine), json.loads(params_json)
    killed_at, k = Path(out).with_suffix(".point"), 1
    with open(out, "w") as results:
        while True:
            shutil.rmtree(home)
            shutil.copytree(pristine, home, symlinks=True)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _kill_at(k, killed_at)
                    _end(home, params)
                except BaseException as exc:  # noqa: BLE001 - reported to the parent by the exit code
                    print(f"k={k}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    code = 3
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            if not os.WIFSIGNALED(status):
                results.write(json.dumps({"k": k, "finished": os.waitstatus_to_exitcode(status)}) + "\n")
                return
            pid = os.fork()
            if pid == 0:
                try:
                    record = {"k": k, "point": killed_at.read_text(), "problems": _check(home, params)}
                except BaseException as exc:  # noqa: BLE001
                    record = {"k": k, "point": killed_at.read_text(), "problems": [f"{type(exc).__name__}: {exc}"]}
                results.write(json.dumps(record) + "\n")
                results.flush()
                os._exit(0)
            os.waitpid(pid, 0)
            k += 1


def test_a_crash_at_every_write_of_a_runs_end_keeps_every_invariant(prepared, tmp_path):
    home, pristine, params = prepared
    out = tmp_path / "results.jsonl"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    code = (f"from tests.test_crash import sweep; sweep({str(home)!r}, {str(pristine)!r}, "
            f"{json.dumps(params)!r}, {str(out)!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    *kills, last = records
    assert last == {"k": len(kills) + 1, "finished": 0}, proc.stderr[-3000:]
    points = [r["point"] for r in kills]
    print(f"{len(kills)} kill points:", *points, sep="\n  ")
    for step in ("/runs/r2/release.json", "/index/", "/releases/current.json", "/runs/r2/gate.json", "/locks/",
                 "delete " + str(home / "runs" / "r0")):
        assert any(step in p for p in points), (step, points)
    broken = {r["point"]: r["problems"] for r in kills if r["problems"]}
    assert not broken, json.dumps(broken, indent=1)[:4000]
