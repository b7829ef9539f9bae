"""Does every file of a release still hold what its manifest recorded? (``mrnet verify``, the gate, summary, gc.)

A release manifest (run/publish.py) records the bytes and SHA-256 of every file it names: the large ones (each
embedding part, with its rows, in its dataset's ``_manifest.json``; the validated catalog; the index files) on the
writer's temp copy, so nothing large is read back; the small ones (models, summary, reports) at publish.
``verify_release`` checks them:

- ``full`` (``mrnet verify``): every file exists, has its bytes, rows and SHA-256;
- quick (the promotion gate, ``mrnet summary``): every file exists with its bytes, every model's SHA-256 (models
  are small, and a damaged model gives silently wrong vectors), every JSON manifest parses. It reads no part.

A file whose manifest recorded less (a release written before these fields) is checked for what was recorded.
"""

from __future__ import annotations

import json

from mrnet.io import storage

MANIFEST = "_manifest.json"


def release_files(manifest: dict) -> list[tuple[str, dict]]:
    """(URI, what was recorded) of every file a release names, datasets and index expanded lazily by ``verify_release``."""
    files = [(entry["uri"], entry | {"model": True}) for entry in manifest["models"].values()]
    files += [(manifest[key]["model"], manifest[key] | {"model": True}) for key in ("agnostic", "crosslingual")
              if key in manifest]
    files.append((manifest["catalog"], manifest.get("catalog_file") or {}))
    files.append((manifest["summary"], (manifest.get("summary_file") or {}) | {"json": True}))
    if ev := manifest.get("evaluation"):
        recorded = ev.get("files") or {}
        files += [(ev["metrics"], recorded.get(ev["metrics"], {}) | {"json": True}), (ev["report"], recorded.get(ev["report"], {}))]
    if xl := manifest.get("crosslingual"):
        files.append((xl["report"], (xl.get("report_file") or {}) | {"json": xl["report"].endswith(".json")}))
    return files


def datasets(manifest: dict) -> list[str]:
    """The embedding datasets of a release: each PG's, and the PG-agnostic one."""
    out = list(manifest["embeddings"].values())
    return out + ([manifest["agnostic"]["embeddings"]] if "agnostic" in manifest else [])


def verify_release(manifest: dict, full: bool = True) -> dict:
    """``{"files", "bytes", "damaged": [(uri, why)]}`` of one release (module docstring: full or quick)."""
    checked, damaged = [], []

    def check(uri: str, recorded: dict) -> None:
        why = problem(uri, recorded, full)
        checked.append(recorded.get("bytes", 0))
        if why:
            damaged.append((uri, why))

    for uri, recorded in release_files(manifest):
        check(uri, recorded)
    for folder in datasets(manifest):
        parts = _json(storage.join(folder, MANIFEST), damaged)
        for part in (parts or {}).get("parts", []):
            check(storage.join(folder, part["file"]), part)
    if index := manifest.get("index"):  # built after publish: a release whose index task has not run has none yet
        top = storage.read_json(storage.join(index["uri"], MANIFEST))
        for space in (top or {}).get("spaces", {}):
            folder = storage.join(index["uri"], space)
            info = _json(storage.join(folder, MANIFEST), damaged)
            for name, recorded in (info or {}).get("files", {}).items():
                check(storage.join(folder, name), recorded)
    return {"files": len(checked), "bytes": sum(checked), "damaged": damaged}


def problem(uri: str, recorded: dict, full: bool) -> str | None:
    """What is wrong with one file, or None."""
    try:
        size = storage.size(uri)  # one stat (or HEAD): missing, and the size, at once
    except FileNotFoundError:
        return "missing"
    if "bytes" in recorded and size != recorded["bytes"]:
        return f"{size} bytes, where {recorded['bytes']} were recorded (cut short or replaced)"
    if recorded.get("json"):
        try:
            json.loads(storage.read_text(uri))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"not JSON ({exc})"
    want = recorded.get("sha256") or recorded.get("version")  # a release from before full hashes: the version
    if want and (full or recorded.get("model")):
        found = storage.sha256_file(storage.local_path(uri))
        if not found.startswith(want):
            return f"SHA-256 {found[:12]}…, where {want[:12]}… was recorded (its bytes changed)"
    if full and "rows" in recorded:
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(storage.local_path(uri)).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any unreadable footer is damage to report, not a crash
            return f"not a readable Parquet file ({type(exc).__name__}: {exc})"
        if rows != int(recorded["rows"]):
            return f"{rows} rows, where {recorded['rows']} were recorded"
    return None


def _json(uri: str, damaged: list) -> dict | None:
    try:
        return json.loads(storage.read_text(uri))
    except FileNotFoundError:
        damaged.append((uri, "missing"))
    except (ValueError, UnicodeDecodeError) as exc:
        damaged.append((uri, f"not JSON ({exc})"))
    return None


def report_text(manifest: dict, result: dict) -> str:
    """The lines ``mrnet verify`` prints: each damaged file, then one verdict line."""
    lines = [f"DAMAGED  {uri}: {why}" for uri, why in result["damaged"]]
    verdict = (f"{len(result['damaged'])} damaged file(s)" if result["damaged"] else "every file as recorded")
    lines.append(f"release {manifest['release']}: {result['files']} file(s), {result['bytes'] / 1e6:,.1f} MB "
                 f"checked: {verdict}")
    return "\n".join(lines)
