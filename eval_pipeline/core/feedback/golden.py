"""Promotion: approved candidates become golden cases, in golden.jsonl and in DuckDB.

The file keeps its existing bytes and order; new cases are appended, one line each, in the
order they were reviewed, so a promotion is a plain append in ``git diff``. The file is
replaced atomically (temporary file in the same folder, fsync, rename, fsync of the
folder), keeping the file's mode. A candidate whose
normalised input is already in the set is refused, with the id of the case it duplicates.

Promotion is idempotent: a case id already in the file is not appended again (this also
finishes a promotion that wrote the file but failed before recording it in the store).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from eval_pipeline.core.regression import cases


def case_id_for(candidate_id: str) -> str:
    return "fb-" + candidate_id.removeprefix("c-")[:12]


def read_golden(path: Path) -> list[cases.Case]:
    """The cases in the file; [] when it does not exist or has no cases yet."""
    if not path.exists() or not path.read_bytes().strip():
        return []
    return cases.load_cases(path)


def append_atomically(path: Path, lines: list[str]) -> None:
    """Existing bytes + new lines, written to a temp file and renamed over the original."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = old + "".join(line + "\n" for line in lines).encode("utf-8")
    # mkstemp creates the file 0600; the golden set is shared (git, CI), so the rewrite
    # keeps the file's mode, or a new file gets the umask's default.
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else _default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut only once this is done


def _default_mode() -> int:
    # Read, not os.umask(): setting it (even back) is process-wide and races other threads.
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class PromotionResult:
    path: str
    version: str | None
    total_cases: int
    added: list[str] = field(default_factory=list)  # case ids appended now
    recovered: list[str] = field(default_factory=list)  # already in the file, now recorded
    refused: list[tuple[str, str]] = field(default_factory=list)  # (candidate_id, why)


_APPROVED = """
SELECT c.candidate_id, c.trace_id, c.user_query, c.assistant_response, c.segment, c.model,
       c.prompt_version, c.comments, c.feedback_ids,
       r.review_id, r.input, r.expected, r.grader, r.tags, r.note, r.reviewer, r.reviewed_at
FROM eval_candidates c
JOIN candidate_reviews r ON r.candidate_id = c.candidate_id AND r.decision = 'approve'
WHERE c.status = 'approved'
QUALIFY row_number() OVER (PARTITION BY c.candidate_id ORDER BY r.reviewed_at DESC) = 1
ORDER BY r.reviewed_at, c.candidate_id
"""


def case_from_review(row: dict) -> cases.Case:
    """The golden case an approved review describes (validated like any golden line)."""
    reviewed_at = row["reviewed_at"]
    provenance = {
        "source": "feedback",
        "source_trace_id": row["trace_id"],
        "candidate_id": row["candidate_id"],
        "feedback_ids": json.loads(row["feedback_ids"]) if row["feedback_ids"] else [],
        "feedback_comments": json.loads(row["comments"]) if row["comments"] else [],
        "bad_answer": row["assistant_response"],
        "segment": row["segment"],
        "model": row["model"],
        "prompt_version": row["prompt_version"],
        "reviewer": row["reviewer"],
        "reviewed_at": reviewed_at.isoformat() + "Z"
        if isinstance(reviewed_at, dt.datetime)
        else reviewed_at,
        "review_id": row["review_id"],
    }
    if row.get("note"):
        provenance["review_note"] = row["note"]
    provenance = {k: v for k, v in provenance.items() if v not in (None, [], "")}
    value = json.loads(row["input"]) if row["input"] else row["user_query"]
    obj = {
        "id": case_id_for(row["candidate_id"]),
        "input": value,
        "expected": json.loads(row["expected"]) if row["expected"] else None,
        "grader": json.loads(row["grader"]),
        "tags": json.loads(row["tags"]) if row["tags"] else [],
        "provenance": provenance,
    }
    return cases.parse_case(obj)


def promote(
    conn: duckdb.DuckDBPyConnection, golden_path: Path, now: dt.datetime | None = None
) -> PromotionResult:
    """Append every approved, not yet promoted candidate to the golden set."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    golden_path = Path(golden_path)
    existing = read_golden(golden_path)
    by_id = {c.id: c for c in existing}
    by_input = {cases.normalise_input(c.input): c.id for c in existing}
    cur = conn.execute(_APPROVED)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    result = PromotionResult(str(golden_path), None, len(existing))
    new_cases: list[tuple[dict, cases.Case]] = []
    recovered: list[tuple[dict, cases.Case]] = []
    refusals: list[tuple[str, str]] = []
    for row in rows:
        try:
            case = case_from_review(row)
        except ValueError as exc:
            refusals.append((row["candidate_id"], f"not a valid case: {exc}"))
            continue
        if case.id in by_id:
            recovered.append((row, by_id[case.id]))
            continue
        key = cases.normalise_input(case.input)
        if key in by_input:
            refusals.append(
                (
                    row["candidate_id"],
                    f"duplicate input: golden case {by_input[key]!r} already asks "
                    "the same question (after normalising case and whitespace)",
                )
            )
            continue
        by_input[key] = case.id
        by_id[case.id] = case
        new_cases.append((row, case))

    if new_cases:
        append_atomically(golden_path, [cases.case_to_json(c) for _, c in new_cases])
    all_cases = existing + [c for _, c in new_cases]
    version = cases.golden_version(all_cases) if all_cases else None

    conn.execute("BEGIN TRANSACTION")
    try:
        for row, case in new_cases + recovered:
            conn.execute("DELETE FROM golden_cases WHERE case_id = ?", [case.id])
            conn.execute(
                "INSERT INTO golden_cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    case.id,
                    row["candidate_id"],
                    row["review_id"],
                    json.dumps(case.input),
                    json.dumps(case.expected),
                    json.dumps(case.grader),
                    json.dumps(case.tags),
                    json.dumps(case.provenance or {}),
                    cases.normalise_input(case.input),
                    cases.case_to_json(case),
                    version or "",
                    now,
                ],
            )
            conn.execute(
                "UPDATE eval_candidates SET status = 'promoted', case_id = ?, "
                "status_reason = NULL, updated_at = ? WHERE candidate_id = ?",
                [case.id, now, row["candidate_id"]],
            )
        for cid, why in refusals:
            conn.execute(
                "UPDATE eval_candidates SET status = 'refused', status_reason = ?, "
                "updated_at = ? WHERE candidate_id = ?",
                [why, now, cid],
            )
        if (
            version
            and not conn.execute(
                "SELECT 1 FROM golden_versions WHERE golden_version = ?", [version]
            ).fetchall()
        ):
            conn.execute(
                "INSERT INTO golden_versions VALUES (?, ?, ?, ?, ?)",
                [version, str(golden_path), len(all_cases), len(new_cases), now],
            )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    result.version = version
    result.total_cases = len(all_cases)
    result.added = [c.id for _, c in new_cases]
    result.recovered = [c.id for _, c in recovered]
    result.refused = refusals
    return result
