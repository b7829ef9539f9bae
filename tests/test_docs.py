"""The docs are a reference a newcomer reads in an hour: within their budgets, with no work log, and every doc a file
or a doc names exists."""

import re

from tests.helpers import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
SOURCES = [p for folder in ("mrnet", "dags", "plugins", "bench", "tests", "configs", "scripts")
           for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml", ".sh", ".md")]
WORK_LOG = re.compile(r"\b(issue|session) \d+\b|\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
                      r"eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth)"
                      r" (session|review)\b", re.IGNORECASE)


def test_readme_and_docs_keep_their_budgets():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    words = {p.name: len(p.read_text().split()) for p in DOCS}
    assert sum(words.values()) <= 15_000, words


def test_no_work_log_in_docs_or_code():
    for path in [REPO / "README.md", *DOCS, *SOURCES]:
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            assert not WORK_LOG.search(line), f"{path.relative_to(REPO)}:{number}: {line.strip()}"


def test_every_named_doc_exists():
    for path in [REPO / "README.md", *DOCS, *SOURCES]:
        text = path.read_text(errors="replace")
        for name in set(re.findall(r"docs/([A-Z]+\.md)", text)) | (
                set(re.findall(r"\]\(([A-Z]+\.md)\)", text)) if path.parent.name == "docs" else set()):
            assert (REPO / "docs" / name).exists(), f"{path.relative_to(REPO)} names docs/{name}, which does not exist"


def test_figures_live_on_the_results_page():
    """The README links the results page instead of quoting measurements."""
    readme = (REPO / "README.md").read_text()
    assert "docs/RESULTS.md" in readme
    assert not re.search(r"\d+(\.\d+)?x\b|\d+ min \d+ s|\b0\.\d{3}\b", readme), "a measured figure in the README"
