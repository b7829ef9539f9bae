"""Server-rendered HTML of the releases pages: plain functions of what mrnet's library returns
(release/history.py, release/neighbors.py), so they are tested without a server. No script, no
build step, nothing fetched from the internet: one stylesheet (static/mrnet.css) and the run's
own PNGs. Numbers are formatted as the CLI prints them (4 decimals, Table 2 as signed %)."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

NAV = (("releases", "Releases"), ("compare", "Compare"), ("neighbors", "Neighbours"))
VERDICT_CLASS = {"improved": "good", "held": "ok", "regressed": "bad", "missing": "bad", "new": "ok",
                 "retired": "ok"}


def num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value) -> str:
    return "–" if value is None else f"{value:+.2f}%"


def layout(title: str, body: str, active: str = "") -> str:
    nav = " ".join(f'<a href="{href}"{" class=on" if href == active else ""}>{label}</a>' for href, label in NAV)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · mrnet</title>'
            f'<link rel="stylesheet" href="static/mrnet.css"></head><body><nav>{nav}</nav>'
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def error_page(title: str, message: str, active: str = "") -> str:
    return layout(title, f'<p class="error">{escape(message)}</p>', active)


def run_link(page: str, release: str, text: str | None = None) -> str:
    return f'<a href="{page}?run={quote(release, safe="")}">{escape(text or release)}</a>'


def releases(data: dict) -> str:
    """Every release, newest first: run, kind, time, promoted, the gate's decision and reasons."""
    champ, chall = data["champion"], data["challenger"]
    lead = (f'<p>Champion: <b class="champion">{escape(champ or "none")}</b> · challenger: '
            f'<b class="challenger">{escape(chall or "none")}</b> <span class="muted">({escape(data["where"])})</span></p>')
    rows = []
    for r in data["rows"]:
        roles = " ".join(f'<span class="tag {role}">{role}</span>' for role in ("champion", "challenger") if r[role])
        decision = ("not gated yet" if not r["gated"] else
                    f'<b class="{"good" if r["promoted"] else "bad"}">{"PROMOTE" if r["promoted"] else "KEEP CHAMPION"}</b>'
                    + (f' vs {escape(r["versus"])}' if r["versus"] else ""))
        reasons = "".join(f"<li>{escape(x)}</li>" for x in r["reasons"][:6])
        more = f'<li class="muted">… {len(r["reasons"]) - 6} more</li>' if len(r["reasons"]) > 6 else ""
        rows.append([f"{escape(r['release'])} {roles}", escape(r["mode"] or "–"), escape(r["created"] or "–"),
                     escape(", ".join(r["pgs"])), escape(r["registry_version"] or "–"),
                     f"{decision}<ul>{reasons}{more}</ul>",
                     f'{run_link("compare", r["release"], "compare")} · {run_link("evaluation", r["release"], "evaluation")}'])
    body = table(["run", "kind", "created", "PGs", "version", "gate decision", ""], rows, "releases") if rows else \
        '<p class="muted">No release yet: trigger mrnet_retrain.</p>'
    return layout("Releases", lead + body, "releases")


def _loss_rows(decision: dict) -> list[list[str]]:
    return [[escape(r["pg"]), escape(r["task"]), num(r["champion"]), num(r["challenger"]),
             "–" if r["delta"] is None else f"{r['delta']:+.4f}", num(r.get("limit")),
             f'<span class="{VERDICT_CLASS.get(r["verdict"], "ok")}">{escape(r["verdict"])}</span>']
            for r in decision["rows"]]


def compare(data: dict, images: dict[str, str]) -> str:
    """Challenger vs champion as ``mrnet compare`` prints it, with deltas coloured by verdict."""
    new, old, decision = data["challenger"], data["champion"], data["decision"]
    same = " (the same release)" if data["same"] else ""
    parts = [f'<p>Challenger <b class="challenger">{escape(new["release"])}</b> vs champion '
             f'<b class="champion">{escape(old["release"] if old else "none")}</b>{same}</p>',
             f'<p class="decision {"good" if decision["promote"] else "bad"}">decision: '
             f'{"PROMOTE" if decision["promote"] else "KEEP CHAMPION"}</p>',
             "<ul>" + "".join(f"<li>{escape(x)}</li>" for x in decision["reasons"]) + "</ul>",
             "<h2>Validation loss per PG and task (normalized: 1.0 is the prior)</h2>",
             table(["PG", "task", "champion", "challenger", "delta", "limit", "verdict"], _loss_rows(decision), "num")]
    agg = decision.get("aggregate") or {}
    parts.append(f"<p>aggregate normalized val loss: champion {num(agg.get('champion'))}, "
                 f"challenger {num(agg.get('challenger'))}, limit {num(agg.get('limit'))}. limit: how far a loss "
                 f"may rise (the tolerance, or the validation noise where that is more); retired: the task "
                 f"overfit, shown, not gated</p>")
    if data["stable"]:
        stable = [[escape(pg), num(v, 3)] for pg, v in data["stable"].items()]
        parts += ["<h2>Embedding stability (k-NN overlap with the champion)</h2>", table(["PG", "overlap"], stable, "num")]
    if decision.get("evaluation"):
        ev = [[escape(r["metric"]), num(r["champion"]), num(r["challenger"]),
               "–" if r["delta"] is None else f"{r['delta']:+.4f}",
               f'<span class="{VERDICT_CLASS.get(r["verdict"], "ok")}">{escape(r["verdict"])}</span>']
              for r in decision["evaluation"]]
        parts += ["<h2>Downstream metrics (higher is better)</h2>",
                  table(["metric", "champion", "challenger", "delta", "verdict"], ev, "num")]
    if data["parts"].strip():
        parts += ["<h2>Autoencoders</h2>", f"<pre>{escape(data['parts'].strip())}</pre>"]
    for label, src in images.items():
        parts.append(f'<h2>{escape(label)}</h2><img alt="{escape(label)}" src="{src}">')
    return layout(f"Compare: {new['release']}", "".join(parts), "compare")


def evaluation(run_id: str, data: dict | None, images: dict[str, str]) -> str:
    """A run's Table 2, its absolute metrics (baselines included) and the skipped tasks."""
    if data is None:
        return error_page(f"Evaluation: {run_id}", f"run {run_id} has no downstream evaluation "
                          "(evaluation.enabled was false, or the stage did not run)", "releases")
    t2 = [[escape(r["task"]), escape(r["metric"]), escape(r["mrnet_feature"]), pct(r["mrnet_rf"]), pct(r["mrnet_lr"]),
           pct(r["tfidf_rf"]), pct(r.get("lsa256_best")), pct(r.get("minilm_best")), num(r["pg_only_lr"], 3),
           num(r["tfidf_lr"])] for r in data["table2"]]
    absolute = [[escape(r["task"]), escape(r["feature"]), escape(r["classifier"]), num(r["mean"]),
                 num(r.get("std"))] for r in data["rows"]]
    skipped = "".join(f"<li><b>{escape(t)}</b>: {escape(why)}</li>" for t, why in data["skipped"].items())
    body = ["<h2>Table 2 (relative to TF-IDF-LR)</h2>",
            table(["task", "metric", "MRNet", "MRNet-RF", "MRNet-LR", "TFIDF-RF", "LSA-best", "MiniLM-best",
                   "PG-only", "TFIDF-LR"], t2, "num")]
    body += [f'<img alt="Table 2" src="{src}">' for src in images.values()]
    body += ["<h2>Absolute metrics</h2>", table(["task", "features", "classifier", "mean", "std"], absolute, "num")]
    if skipped:
        body += ["<h2>Skipped tasks</h2>", f"<ul>{skipped}</ul>"]
    if data["neighbors"]:
        body.append(f'<p>{run_link("evaluation/neighbors", run_id, "Nearest neighbours of sample queries")}</p>')
    return layout(f"Evaluation: {run_id}", "".join(body), "releases")


def neighbors(form: dict, pgs: list[str], result: tuple[dict, list[dict]] | None, error: str | None) -> str:
    """The query form (a product id, or a title plus a PG) and the k nearest products."""
    options = "".join(f'<option value="{escape(p)}"{" selected" if p == form.get("pg") else ""}>{escape(p)}</option>'
                      for p in pgs)
    body = [f'<form method="get" action="neighbors"><label>Product id <input name="id" value="{escape(form.get("id") or "")}">'
            f'</label> <span class="muted">or</span> <label>Title <input name="title" size="40" '
            f'value="{escape(form.get("title") or "")}"></label> <label>PG <select name="pg"><option value="">–</option>'
            f'{options}</select></label> <label>k <input name="k" size="3" value="{escape(str(form.get("k") or 10))}">'
            f'</label> <button type="submit">Find</button></form>']
    if error:
        body.append(f'<p class="error">{escape(error)}</p>')
    if result:
        query, rows = result
        what = f"id {query['product_id']}" if query["product_id"] else f"title “{query['title']}”"
        body.append(f"<p>nearest to {escape(what)} in PG {escape(query['pg'] or '–')} ({query['space']} space, "
                    f"{query['candidates']} products, {escape(query.get('method', 'exact'))} search, "
                    f"release {escape(query['release'])})</p>")
        columns = [c for c in rows[0] if c != "rank"] if rows else []
        cells = [[escape(str(r["rank"]))] + [num(r[c], 3) if c == "distance" else escape(str(r[c]) if r[c] is not None else "")
                                             for c in columns] for r in rows]
        body.append(table(["rank", *columns], cells, "neighbours"))
    return layout("Neighbours in the champion release", "".join(body), "neighbors")
