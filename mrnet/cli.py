"""``mrnet …`` / ``python -m mrnet …``: every pipeline step, plus ``run`` for all of them.

Each command takes ``--config`` (default configs/demo.yaml), ``--set key=value``
overrides and ``--tiny`` (few rows, 1 epoch of 2 steps: a smoke run).
Inputs default to the artifact layout of run/steps.py, so the steps chain::

    mrnet catalog build-demo && mrnet catalog validate && mrnet corpus && mrnet word2vec
    mrnet train --pg watches && mrnet embed --pg watches
    mrnet embed --pg watches --titles new_titles.csv --out new.parquet     # cold start
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mrnet.config.schema import Config, load_config
from mrnet.data.pgs import pg_list
from mrnet.io import storage
from mrnet.run import steps


def _root(cfg: Config, *parts: str) -> str:
    return storage.join(cfg.artifact_root, *parts)


def _cmd_run(cfg: Config, args) -> None:
    import signal

    params = {"config": args.config, "overrides": args.overrides, "tiny": args.tiny,
              "promote": not args.no_promote}
    run_id = args.run_id
    if args.resume:
        from mrnet.run.context import unfinished_run

        found = unfinished_run(storage.absolute(cfg.artifact_root))
        if found is None:
            raise ValueError(f"nothing to resume: every run under {storage.absolute(cfg.artifact_root)}/runs finished")
        run_id, params = found
        print(f"resuming run {run_id} with its own params", flush=True)
    signal.signal(signal.SIGTERM, _terminate)  # `kill`: end the MLflow runs as KILLED, not left RUNNING
    from mrnet.run import local

    summary = local.run(params, run_id, mode="refresh" if args.command == "refresh" else "retrain")
    print(f"run {summary['run_id']}: {summary['artifact_root']}")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _cmd_compare(cfg: Config, args) -> None:
    from mrnet.release.manifest import compare

    print(compare(cfg))


def _cmd_summary(cfg: Config, args) -> None:
    """Print the summary of a run (default: the newest run under artifact_root), and what of its release is
    damaged (a quick ``mrnet verify``) instead of failing on it."""
    from mrnet.release.manifest import parts_summary, read_manifest
    from mrnet.release.verify import report_text, verify_release

    runs = storage.join(cfg.artifact_root, "runs")
    root = args.run or steps.latest_run(runs)
    print(storage.read_text(storage.join(root, "summary.md")))
    if storage.exists(storage.join(root, "release.json")):
        try:
            manifest = read_manifest(storage.join(root, "release.json"))
        except ValueError as exc:
            print(f"DAMAGED  {exc}")
        else:
            print(parts_summary(manifest))
            checked = verify_release(manifest, full=False)
            if "evaluation" in manifest and manifest["evaluation"]["metrics"] not in dict(checked["damaged"]):
                from mrnet.evaluation.report import table2_text

                print(table2_text(json.loads(storage.read_text(manifest["evaluation"]["metrics"]))))
            print(report_text(manifest, checked) + " (quick: sizes and model hashes; mrnet verify checks every byte)")
    print(f"run folder: {root}")


def _cmd_verify(cfg: Config, args) -> None:
    """``mrnet verify``: every file of a release against what its manifest recorded; exit 1 if any is damaged."""
    from mrnet.release.manifest import manifest_by_alias, read_manifest
    from mrnet.release.verify import report_text, verify_release

    if args.run:
        uri = args.run if args.run.endswith(".json") else (
            storage.join(args.run, "release.json") if "/" in args.run
            else storage.join(storage.absolute(cfg.artifact_root), "runs", args.run, "release.json"))
        manifest = read_manifest(uri)
    else:
        manifest, where = manifest_by_alias(cfg, "champion")
        if manifest is None:
            raise ValueError(f"no champion release under {where}: give --run")
    result = verify_release(manifest, full=not args.quick)
    print(report_text(manifest, result))
    if result["damaged"]:
        raise ValueError(f"release {manifest['release']}: {len(result['damaged'])} damaged file(s), listed above; "
                         "restore them from a backup, or retrain (a run's files are never rewritten)")


def _cmd_build_demo(cfg: Config, args) -> None:
    from mrnet.data.demo import build_demo_catalog

    out = args.out or _root(cfg, "catalog", "raw.parquet")
    print(build_demo_catalog(cfg.data.raw_dir, cfg.data.pg_mapping, out))


def _cmd_validate(cfg: Config, args) -> None:
    from mrnet.data.catalog import describe_quarantine

    source = args.catalog or cfg.data.catalog or _root(cfg, "catalog", "raw.parquet")
    uri, summary = steps.validate_step(cfg, source)
    print(describe_quarantine(summary))
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    print(uri)


def _cmd_corpus(cfg: Config, args) -> None:
    uri, stats = steps.corpus_step(cfg, args.catalog or _root(cfg, "catalog", "catalog.parquet"))
    print(json.dumps(stats), uri, sep="\n")


def _cmd_word2vec(cfg: Config, args) -> None:
    uri, stats = steps.word2vec_step(cfg, args.corpus or _root(cfg, "corpus", "corpus.txt"))
    print(json.dumps(stats), uri, sep="\n")


def _cmd_train(cfg: Config, args) -> None:
    pg_list(cfg.model_copy(update={"pgs": [args.pg]}))
    uri, report = steps.train_step(cfg, args.pg, args.catalog or _root(cfg, "catalog", "catalog.parquet"),
                                      args.vectors or _root(cfg, "word2vec", "vectors.bin"))
    last = report["history"][-1] if report["history"] else {}
    print(json.dumps({k: last.get(k) for k in ("epoch", "seconds", "titles_per_s")}), uri, sep="\n")


def champion_model(cfg: Config, pg: str) -> str:
    """The PG's encoder in the champion release, read from the release's manifest: the one
    pointer that decides (``<prefix>-release@champion``, or releases/current.json without
    tracking), never a per-PG alias that a killed promotion may have left ahead of it."""
    from mrnet.release.manifest import manifest_by_alias, release_model

    manifest, where = manifest_by_alias(cfg, "champion")
    if manifest is None:
        raise ValueError(f"no champion release under {where}: run mrnet_retrain first, or give --model")
    if pg not in manifest["models"]:
        raise ValueError(f"unknown PG {pg!r}: champion release {manifest['release']} has {sorted(manifest['models'])}")
    return release_model(manifest, pg)


def beside(uri: str, suffix: str) -> str:
    """``new.csv`` → ``new<suffix>`` in the same folder (a dotted folder name stays whole)."""
    folder, _, name = uri.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{folder}/{stem}{suffix}" if folder else f"{stem}{suffix}"


def _cmd_promote(cfg: Config, args) -> None:
    from mrnet.io import tracking
    from mrnet.release.manifest import aliased_manifest, repair_champion

    home = storage.absolute(cfg.artifact_root)
    uri = tracking.tracking_uri(cfg, home, create=False) if cfg.tracking.enabled else None
    if aliased_manifest(cfg, home, uri, "champion") is None:
        print(f"no champion release under {home} ({uri or 'no tracking'}): nothing to repair; a run that passes "
              "the promotion gate makes one")
        return
    fixed = repair_champion(cfg, home, uri)
    print("\n".join(fixed) if fixed else "every champion alias and releases/current.json agree with the champion release")


def _cmd_gc(cfg: Config, args) -> None:
    uri, text = steps.gc_step(cfg, args.dry_run)
    print(f"{text}\nreport: {uri}" if uri else text)


def _cmd_embed(cfg: Config, args) -> None:
    from mrnet.encoder.embed import embed_cold_start

    model = args.model or champion_model(cfg, args.pg)
    if model.startswith("models:/"):
        from mrnet.io import tracking

        model = tracking.resolve_model(tracking.tracking_uri(cfg, storage.absolute(cfg.artifact_root), create=False), model)
    if args.titles:
        print(embed_cold_start(model, args.titles, args.out or beside(args.titles, ".emb.parquet"),
                               cfg.embed.batch_size))
        return
    catalog = args.catalog or _root(cfg, "catalog", "catalog.parquet")
    print(steps.embed_step(cfg, model, catalog, args.pg)[0])


def _cmd_neighbors(cfg: Config, args) -> None:
    from mrnet.release import neighbors as nn

    manifest = nn.load_release(cfg, args.release)
    query, rows = nn.neighbors(manifest, args.k, args.space, args.pg, args.id, args.title, args.exact)
    print(nn.format_table(query, rows))


def _cmd_evaluate(cfg: Config, args) -> None:
    """Downstream evaluation (paper §4) of any finished run's embeddings, with the evaluation
    settings of ``--config`` / ``--set`` (so new tasks or a SIOC label file apply to old runs).
    Writes ``<run>/evaluations/<UTC time>/`` (never the run's own ``evaluation/``, which its
    release and the promotion gate refer to)."""
    from datetime import datetime, timezone

    from mrnet.evaluation.report import table2_text
    from mrnet.run.context import load_run
    from mrnet.run.derived import evaluate_run

    root = (args.run or steps.latest_run(storage.join(cfg.artifact_root, "runs"))).rstrip("/")
    run_uri, summary_uri = storage.join(root, "run.json"), storage.join(root, "summary.json")
    for uri in (run_uri, summary_uri):
        if not storage.exists(uri):
            raise FileNotFoundError(f"{uri} not found: --run must be a run folder whose PG stages finished "
                                    "(…/runs/<run_id>)")
    run = load_run(run_uri)
    out = args.out or storage.join(root, "evaluations", f"{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}")
    run_cfg = run.cfg.model_copy(update={"evaluation": cfg.evaluation, "train": run.cfg.train.model_copy(
        update={"progress": True})})
    result, files = evaluate_run(run, summary_uri, out, run_cfg)
    print(table2_text(result))
    print(f"report: {files['report.md']}")


def _cmd_init(args) -> None:
    from mrnet.data.starter import init

    out = args.out or "configs/my_catalog.yaml"
    if Path(out).exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it or --out another file")
    print(init(args.catalog, out))
    print(f"wrote {out}\nnext: mrnet run --config {out}   then: mrnet summary --config {out}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="configs/demo.yaml", help="YAML config (default: %(default)s)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    common.add_argument("--tiny", action="store_true", help="smoke-run size: few rows, 1 epoch of 2 steps")
    parser = argparse.ArgumentParser(prog="mrnet", description="MRNet-Product2Vec embeddings pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "full retrain: the mrnet_retrain DAG's stages, without Airflow"),
                       ("refresh", "dynamic-signal refresh of the current release (mrnet_refresh_dynamic)")):
        p = sub.add_parser(name, parents=[common], help=text)
        run_id = p.add_mutually_exclusive_group()
        run_id.add_argument("--run-id", help="default: local__<UTC time>; an existing id continues that run")
        run_id.add_argument("--resume", action="store_true",
                            help="continue the newest run that did not finish (its id and params; checkpoints, caches)")
        p.add_argument("--no-promote", action="store_true", help="record the release, keep the current one")
        p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("init", help="a starter config for your own catalog file (columns, tasks, evaluation)")
    p.add_argument("--catalog", required=True, help="your catalog: .csv, .csv.gz, .tsv or .parquet")
    p.add_argument("--out", help="config to write (default: configs/my_catalog.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(fn=_cmd_init, no_config=True)
    sub.add_parser("compare", parents=[common], help="challenger vs champion, as the promotion gate sees them"
                   ).set_defaults(fn=_cmd_compare)
    p = sub.add_parser("promote", parents=[common], help="--repair: point every champion alias (and "
                       "releases/current.json) at the champion release after an interrupted promotion")
    p.add_argument("--repair", action="store_true", required=True)
    p.set_defaults(fn=_cmd_promote)
    p = sub.add_parser("gc", parents=[common], help="retention: delete the runs retention.* does not keep "
                       "(never a champion, ever-champion, challenger or running run), and old checkpoints")
    p.add_argument("--dry-run", action="store_true", help="print what it would delete and the space, delete nothing")
    p.set_defaults(fn=_cmd_gc)
    p = sub.add_parser("verify", parents=[common], help="check every file of a release against its manifest "
                       "(bytes, rows, SHA-256); exit 1 naming each damaged file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="a run id, run folder or release.json (default: the champion release)")
    which.add_argument("--champion", action="store_true", help="the champion release (the default)")
    p.add_argument("--quick", action="store_true", help="sizes and model hashes only (what the promotion gate checks)")
    p.set_defaults(fn=_cmd_verify)
    p = sub.add_parser("summary", parents=[common], help="print a run's summary (default: newest run)")
    p.add_argument("--run", help="a run folder (…/runs/<run_id>)")
    p.set_defaults(fn=_cmd_summary)
    catalog = sub.add_parser("catalog", help="build / validate catalogs").add_subparsers(dest="action", required=True)
    p = catalog.add_parser("build-demo", parents=[common], help="canonical catalog from shared/data")
    p.add_argument("--out")
    p.set_defaults(fn=_cmd_build_demo)
    p = catalog.add_parser("validate", parents=[common], help="validate; defects → quarantine")
    p.add_argument("--catalog")
    p.set_defaults(fn=_cmd_validate)
    p = sub.add_parser("corpus", parents=[common], help="tokenized corpus file for word2vec")
    p.add_argument("--catalog")
    p.set_defaults(fn=_cmd_corpus)
    p = sub.add_parser("word2vec", parents=[common], help="train word vectors")
    p.add_argument("--corpus")
    p.set_defaults(fn=_cmd_word2vec)
    p = sub.add_parser("train", parents=[common], help="train one PG model")
    p.add_argument("--pg", required=True)
    p.add_argument("--catalog")
    p.add_argument("--vectors")
    p.set_defaults(fn=_cmd_train)
    p = sub.add_parser("embed", parents=[common], help="embed a PG's catalog products, or new titles")
    p.add_argument("--pg", required=True)
    p.add_argument("--model", help="model.safetensors or models:/mrnet-<pg>@<alias> "
                                   "(default: the PG's champion)")
    p.add_argument("--catalog")
    p.add_argument("--titles", help="cold start: CSV with a 'title' column (optional 'product_id')")
    p.add_argument("--out")
    p.set_defaults(fn=_cmd_embed)
    p = sub.add_parser("evaluate", parents=[common], help="downstream tasks vs TF-IDF (Table 2), neighbours, "
                       "interpretation, on a run's embeddings")
    p.add_argument("--run", help="a run folder (…/runs/<run_id>; default: the newest run)")
    p.add_argument("--out", help="report folder (default: <run>/evaluations/<UTC time>)")
    p.set_defaults(fn=_cmd_evaluate)
    p = sub.add_parser("neighbors", parents=[common], help="k nearest products (Euclidean) of an id or a title")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--id", help="a product id of the release")
    query.add_argument("--title", help="a free-text title (cold start through the --pg model)")
    p.add_argument("--pg", help="product group (needed for --title and --space pg with a title)")
    p.add_argument("--space", choices=["pg", "agnostic"], default="pg",
                   help="PG-specific (d-dim: 512 by default, 256 in the demo config) or PG-agnostic (2d) embeddings (default: %(default)s)")
    p.add_argument("-k", type=int, default=10, help="neighbours to show (default: %(default)s)")
    p.add_argument("--release", help="release.json or run folder (default: the champion release)")
    p.add_argument("--exact", action="store_true", help="read the whole space and search it exactly, not the release index")
    p.set_defaults(fn=_cmd_neighbors)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mrnet").setLevel(logging.INFO)
    try:
        if getattr(args, "no_config", False):
            args.fn(args)
        else:
            args.fn(load_config(args.config, args.overrides, tiny=args.tiny), args)
    except (ValueError, OSError, EOFError, RuntimeError) as exc:  # OSError: not found, permission, a directory ...
        print(f"mrnet: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else (a store's own error ...): one line too, the traceback on demand
        if os.environ.get("MRNET_DEBUG"):
            raise
        print(f"mrnet: error: {type(exc).__name__}: {error_line(exc)} (MRNET_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


def error_line(exc: BaseException) -> str:
    """One line for the terminal: the message, whitespace folded; an OSError names its file."""
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc.strerror or ""):
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:600] + " …"
