"""Release manifests and the champion pointer: find, compare, move (no run needed).

A release is one JSON manifest naming every PG model and embedding file of one run, with
the config and catalog hashes, so a consumer loads one consistent set. The files it
names are run-scoped and never rewritten after the run, so moving the ``champion`` alias
and replacing ``releases/current.json`` (atomically) is the whole promotion: nothing
half-written is ever visible. The run stages that write a manifest, register it and gate it
are in run/publish.py; this module is what they, ``mrnet compare`` / ``promote --repair`` /
``neighbors`` and the summary read and move: the champion pointer (``<prefix>-release@champion``
with tracking, else ``releases/current.json``), its mirrors, and the gate's judgement (release/gate.py).
"""

from __future__ import annotations

import functools
import json
import logging

from mrnet.config.base import safe_run_id
from mrnet.io import storage

log = logging.getLogger(__name__)


def release_model(manifest: dict, part: str) -> str:
    """The URI of a release's model ``part`` (a PG, or ``agnostic``), once its bytes match the version the release
    recorded (the first 12 hex digits of its SHA-256): a model damaged after publishing is an error naming it,
    never a source of silently wrong vectors."""
    entry = manifest["agnostic"] if part == "agnostic" else manifest["models"][part]
    uri, recorded = entry.get("model") or entry["uri"], entry.get("version")
    if recorded and (found := file_version(uri)) != recorded:
        raise ValueError(f"{uri}: its SHA-256 starts {found}, where release {manifest.get('release')} recorded "
                         f"{recorded}: the file changed after publishing; restore it or retrain")
    return uri


@functools.lru_cache(maxsize=64)
def file_version(uri: str) -> str:
    """A model file's version (encoder/embed.py ``model_version``), hashed once per process: a query process
    that loads a model once checks it once."""
    from mrnet.encoder.embed import model_version

    return model_version(uri)


def read_manifest(uri: str) -> dict:
    """A release manifest file, or a one-line error naming it: missing (FileNotFoundError), not JSON, or JSON
    that is not a release manifest (ValueError)."""
    try:
        manifest = json.loads(storage.read_text(uri))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{uri} is not a release manifest: not JSON ({exc}); give a release.json or a run "
                         "folder, or repair it (mrnet promote --repair rewrites releases/current.json)") from None
    if not isinstance(manifest, dict) or "release" not in manifest:
        raise ValueError(f"{uri} is not a release manifest (it names no release)")
    return manifest


def current_uri(home: str) -> str:
    return storage.join(home, "releases", "current.json")


PARTS = {"agnostic": ("sparse_autoencoder", "sparse_ae"), "crosslingual": ("cross_language_autoencoder", "crosslingual_ae")}


def move_aliases(uri: str, prefix: str, registry: dict[str, str], alias: str) -> None:
    """Point ``alias`` at a release: the mirrors first (each PG encoder and autoencoder, for the
    MLflow UI), ``<prefix>-release`` last. Every reader resolves parts through the release's
    manifest, so a move killed midway leaves the old release whole, and ``repair_champion``
    puts the mirrors back."""
    from mrnet.io import tracking as tr

    for part, version in registry.items():
        if part != "release":
            tr.set_alias(uri, f"{prefix}-{part}", alias, version)
    if "release" in registry:
        tr.set_alias(uri, f"{prefix}-release", alias, registry["release"])


def publish_champion(cfg, home: str, uri: str | None, manifest: dict) -> None:
    """Make ``manifest`` the champion. With tracking, the registry aliases (the release pointer
    last, ``move_aliases``) and then ``releases/current.json`` as its mirror; without, the
    archived copy first and current.json, the pointer, last. A kill anywhere leaves one
    champion, which ``repair_champion`` (the next promotion, or ``mrnet promote --repair``) mirrors."""
    if uri:
        move_aliases(uri, cfg.tracking.registry_prefix, manifest["registry"], "champion")
    storage.write_text(storage.join(home, "releases", f"{safe_run_id(manifest['release'])}.json"),
                       json.dumps(manifest, indent=2))
    storage.write_text(current_uri(home), json.dumps(manifest, indent=2))


def repair_champion(cfg, home: str, uri: str | None) -> list[str]:
    """Make the mirrors agree with the one pointer that decides (``<prefix>-release@champion``
    with tracking, else ``releases/current.json``): each part's ``champion`` alias, and
    current.json. Returns what it fixed, e.g. after a promotion killed between two aliases."""
    manifest = aliased_manifest(cfg, home, uri, "champion")
    if manifest is None:
        return []
    manifest.pop("registry_version", None)
    fixed = []
    if uri:
        from mrnet.io import tracking as tr

        prefix = cfg.tracking.registry_prefix
        mirrors = {p: str(v) for p, v in manifest.get("registry", {}).items() if p != "release"}
        for part, version in mirrors.items():
            held = tr.version_by_alias(uri, f"{prefix}-{part}", "champion")
            if not held or held["version"] != version:
                tr.set_alias(uri, f"{prefix}-{part}", "champion", version)
                fixed.append(f"{prefix}-{part}@champion: {held['version'] if held else 'unset'} → {version}")
        current = current_uri(home)
        if not storage.exists(current) or json.loads(storage.read_text(current)).get("release") != manifest["release"]:
            storage.write_text(current, json.dumps(manifest, indent=2))
            fixed.append(f"releases/current.json → release {manifest['release']}")
    archived = storage.join(home, "releases", f"{safe_run_id(manifest['release'])}.json")
    if not storage.exists(archived):  # a kill after the pointer moved, before the archived copy: without it, gc
        storage.write_text(archived, json.dumps(manifest, indent=2))  # would not know the run was ever champion
        fixed.append(f"releases/{safe_run_id(manifest['release'])}.json written (the champion's rollback copy)")
    for line in fixed:
        log.warning("repaired a half-done promotion: %s", line)
    return fixed


def aliased_manifest(cfg, home: str, mlflow_uri: str | None, alias: str) -> dict | None:
    """The release manifest behind ``<prefix>-release@alias`` when tracking is on (so an alias
    moved back in the MLflow UI is a rollback); without tracking, the champion is
    ``releases/current.json`` and the challenger the newest recorded release."""
    if mlflow_uri:
        from mrnet.io import tracking as tr

        version = tr.version_by_alias(mlflow_uri, f"{cfg.tracking.registry_prefix}-release", alias)
        if version is None:
            return None
        return read_manifest(version["tags"]["manifest"]) | {"registry_version": version["version"]}
    if alias == "champion":
        current = current_uri(home)
        return read_manifest(current) if storage.exists(current) else None
    return newest_release(home)


def newest_release(home: str) -> dict | None:
    """The most recently created release manifest under ``home/runs`` (local or S3), or None."""
    newest = None
    for folder in storage.children(storage.join(home, "runs")):
        uri = storage.join(home, "runs", folder, "release.json")
        try:
            manifest = read_manifest(uri)
        except FileNotFoundError:  # no release (yet, or a gc just removed it)
            continue
        except ValueError as exc:  # a damaged one is not a challenger: say so, and look on
            log.warning("%s", exc)
            continue
        if newest is None or manifest.get("created", "") >= newest.get("created", ""):
            newest = manifest
    return newest


def manifest_by_alias(cfg, alias: str) -> tuple[dict | None, str]:
    """(the manifest behind ``alias`` for a config's artifact root, or None; where it looked) —
    outside a run, e.g. ``mrnet compare`` and ``mrnet neighbors``."""
    home = storage.absolute(cfg.artifact_root)
    uri = None
    if cfg.tracking.enabled:
        from mrnet.io import tracking as tr

        uri = tr.tracking_uri(cfg, home, create=False)
    return aliased_manifest(cfg, home, uri, alias), f"{home} ({uri or 'no tracking'})"


def compare(cfg) -> str:
    """``mrnet compare``: challenger vs champion, side by side, as the promotion gate sees them."""
    challenger, where = manifest_by_alias(cfg, "challenger")
    champion, _ = manifest_by_alias(cfg, "champion")
    if challenger is None:
        raise ValueError(f"no challenger release under {where}: run mrnet_retrain first")
    decision, stable, text = judge(cfg, challenger, json.loads(storage.read_text(challenger["summary"])), champion,
                                   verify=True)

    def name(m):
        return "none" if m is None else f"{m['release']}" + (f" (version {m['registry_version']})" if "registry_version" in m else "")

    same = " (the same release)" if champion and champion["release"] == challenger["release"] else ""
    header = f"challenger: {name(challenger)}\nchampion:   {name(champion)}{same}\n"
    return header + "\n" + text + parts_table(challenger, champion)


def parts_summary(manifest: dict) -> str:
    """Two lines on the release's autoencoders, for ``mrnet summary`` (empty if it has none)."""
    lines = []
    if agnostic := manifest.get("agnostic"):
        anchor = agnostic["val"].get("anchor_rel")
        lines.append(f"PG-agnostic embeddings (sparse autoencoder, §3.2): {agnostic['dim']}-d, val recon_rel "
                     f"{agnostic['val'].get('recon_rel', float('nan')):.3f}"
                     + ("" if anchor is None else f", anchor_rel {anchor:.3f}") + f" → {agnostic['embeddings']}")
    if ev := manifest.get("evaluation"):
        lines.append(f"downstream evaluation (§4, Table 2): {len(ev['gated'])} gated MRNet metrics, "
                     f"{len(ev['skipped'])} task(s) skipped → {ev['report']}")
    if xl := manifest.get("crosslingual"):
        mrr = ", ".join(f"{m} {v:.3f}" for m, v in xl["mrr"].items())
        lines.append(f"cross-language autoencoder (§5), held-out MRR: {mrr} → "
                     f"{xl['report'].rsplit('/', 1)[0]}/report.md")
    return "\n".join(lines)


def parts_table(challenger: dict, champion: dict | None) -> str:
    """The autoencoders side by side (informational; the gate decides on the PG tasks)."""
    def value(manifest, part, key):
        section = (manifest or {}).get(part) or {}
        v = section.get("val", {}).get(key) if part == "agnostic" else section.get("mrr", {}).get(key)
        return "–" if v is None else f"{v:.4f}"

    rows = [("sparse AE val recon_rel (lower is better)", "agnostic", "recon_rel"),
            ("sparse AE val anchor_rel (lower is better)", "agnostic", "anchor_rel"),
            ("cross-language MRR, autoencoder", "crosslingual", "autoencoder"),
            ("cross-language MRR, least squares", "crosslingual", "least_squares")]
    lines = [f"  {label:<42} {value(champion, part, key):>10} → {value(challenger, part, key)}"
             for label, part, key in rows if part in challenger]
    return ("\n\nautoencoders (champion → challenger):\n" + "\n".join(lines)) if lines else ""


def judge(cfg, manifest: dict, summary: dict, champion: dict | None, verify: bool = False) -> tuple[dict, dict, str]:
    """The gate's decision, the k-NN stability and the table, for ``mrnet compare`` and the gate.
    A refresh of a subset: PGs the challenger lacks but its manifest still names are the
    champion's own, so the champion's results stand in for them. ``verify`` (the gate, ``mrnet compare``; not the
    UI's pages, which would hash every model per view): a challenger whose files fail a quick verification
    (release/verify.py) is refused whatever its metrics."""
    from mrnet.release import gate
    from mrnet.release.verify import verify_release

    embeddings = manifest["embeddings"]
    old = json.loads(storage.read_text(champion["summary"])) if champion else None
    if old and manifest["mode"] == "refresh":
        summary = summary | {"pgs": {pg: r for pg, r in old["pgs"].items() if pg in embeddings} | summary["pgs"]}
    evaluation, note = gate.comparable(manifest.get("evaluation"), (champion or {}).get("evaluation"))
    decision = gate.decide(summary, old, cfg.gate, evaluation, {t.name: t.weight for t in cfg.evaluation.tasks})
    decision["reasons"] += [note] if note and champion else []
    if damaged := verify_release(manifest, full=False)["damaged"] if verify else []:
        decision |= {"promote": False, "reasons": decision["reasons"] + [
            f"the release fails verification: {len(damaged)} damaged file(s), e.g. {damaged[0][0]}: {damaged[0][1]}"]}
    stable = gate.stability(champion["embeddings"], embeddings, cfg.gate) if champion and not damaged else {}
    return decision, stable, gate.table(decision, stable, cfg.gate.stability_k)
