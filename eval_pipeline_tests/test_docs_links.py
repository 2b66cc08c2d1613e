"""The documentation cannot rot silently: every relative link and every code path it names
must exist in the repository.

Checked in README.md, ARCHITECTURE.md, SECURITY.md and docs/*.md (text outside fenced code
blocks):

- a relative link ``[text](path#anchor)`` points at a file or folder that exists, and its
  ``#anchor`` (if any) at a heading of that markdown file, slugged the way GitHub does;
- a path in backticks under the repository's code folders (``eval_pipeline/...``,
  ``eval_pipeline_tests/...``, ``bench/...``, ``scripts/...``, or ``core/``, ``defs/``,
  ``cli/``, ``demo/`` relative to ``eval_pipeline/``) exists;
- a dotted name in backticks under one of the package's modules
  (``eval_pipeline.core.regression.history.latest_baseline``, ``eval_pipeline.demo.app:answer``)
  is a module, or a module that defines the trailing name.

Text with a placeholder (``<day>``, ``*``, ``NNN``, ``…``) is a pattern, not a path, and is
skipped. Plain file reads only: no import is executed, so the test takes milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "SECURITY.md"]
    + list((ROOT / "docs").glob("*.md"))
)

_FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_PATH = re.compile(
    r"(?<![\w./-])((?:eval_pipeline|eval_pipeline_tests|bench|scripts|core|defs|cli|demo)/[\w./-]*)"
)
_DOTTED = re.compile(r"(?<![\w./-])(eval_pipeline(?:\.\w+)+)(?::(\w+))?")
_PLACEHOLDER = re.compile(r"[<>*{}…]|NNN")
_UNDER_PACKAGE = ("core/", "defs/", "cli/", "demo/")


def _prose(text: str) -> str:
    """The markdown without its fenced code blocks (examples, not references)."""
    return _FENCED.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def link_problems(doc: Path) -> list[str]:
    problems = []
    for target in _LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            problems.append(f"{target}: {file_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def _module_defines(path: Path, name: str) -> bool:
    text = path.read_text(encoding="utf-8")
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{name}\b|^\s*{name}\s*(?::[^=\n]*)?="
    return re.search(pattern, text, re.MULTILINE) is not None


def _module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dotted_problem(dotted: str, attr: str) -> str | None:
    """None when ``dotted`` (plus ``:attr``) names a module or something a module defines."""
    parts = dotted.split(".")
    names = [attr] if attr else []
    while parts:
        module = _module_file(".".join(parts))
        if module is not None:
            if not names:
                return None
            if len(names) == 1 and _module_defines(module, names[0]):
                return None
            # module.Class.method: the class must be defined there, the rest is not checked.
            if len(names) > 1 and _module_defines(module, names[-1]):
                return None
            return f"{'.'.join(parts)} does not define {names[-1]}"
        names.insert(0, parts.pop())
    return "no such module"


def code_path_problems(doc: Path) -> list[str]:
    problems = []
    for code in _CODE.findall(_prose(doc.read_text(encoding="utf-8"))):
        for match in _PATH.finditer(code):
            path = match.group(1).rstrip(".,:;")
            if _PLACEHOLDER.search(path) or "..." in path or code[match.end() :][:1] == "=":
                continue  # a pattern, or a tag such as eval_pipeline/feedback_sha256=<sha>
            rel = "eval_pipeline/" + path if path.startswith(_UNDER_PACKAGE) else path
            if not (ROOT / rel).exists():
                problems.append(f"`{code}`: {rel} does not exist")
        for dotted, attr in _DOTTED.findall(code):
            if _module_file(".".join(dotted.split(".")[:2])) is None:
                continue  # a name, not code: the annotation name eval_pipeline.quality
            problem = dotted_problem(dotted, attr)
            if problem:
                problems.append(f"`{code}`: {problem}")
    return problems


def test_the_docs_are_found():
    names = {p.name for p in DOCS}
    assert {"README.md", "ARCHITECTURE.md", "SECURITY.md"} <= names
    assert len(DOCS) > 3


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert link_problems(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_paths_exist(doc):
    assert code_path_problems(doc) == []


def test_the_checks_can_fail(tmp_path):
    """A broken link, a missing anchor, a missing path and a moved function are all caught."""
    (tmp_path / "other.md").write_text("# A heading\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#a-heading) [gone](missing.md) [bad anchor](other.md#nope)\n"
        "`core/store.py` `core/no_such_module.py` `eval_pipeline/core/schema/` "
        "`core/schema/NNN_*.sql` `eval_pipeline.core.regression.history.latest_baseline` "
        "`eval_pipeline.core.regression.gate.latest_baseline` `eval_pipeline.demo.app:answer`\n"
        "`eval_pipeline.quality` `eval_pipeline/feedback_sha256=<sha>`\n"
        "```\n[in code](nowhere.md) `core/also_not_checked.py`\n```\n",
        encoding="utf-8",
    )
    assert link_problems(doc) == [
        "missing.md: missing.md does not exist",
        "other.md#nope: no heading #nope in other.md",
    ]
    problems = code_path_problems(doc)
    assert len(problems) == 2, problems
    assert "eval_pipeline/core/no_such_module.py does not exist" in problems[0]
    assert "gate does not define latest_baseline" in problems[1]


def test_github_slugs():
    assert _slug("The judge (`bench judge`)") == "the-judge-bench-judge"
    assert _slug("Traces in: the inbox") == "traces-in-the-inbox"
    assert _slug("What the collector and the sensor guarantee") == (
        "what-the-collector-and-the-sensor-guarantee"
    )
