"""Feedback to eval as Dagster definitions:

    feedback inbox --(feedback_inbox_sensor)--> feedback --> eval_candidates
        --> review_decisions (a person, via `eval-pipeline review`) --> golden_set

- ``feedback_inbox_sensor`` (running by default) looks at the inbox folder and at the
  Dagster run history, never at DuckDB. For each complete file whose content (by hash) has
  no successful run, no run in progress and fewer than MAX_ATTEMPTS failed runs, it requests
  a run of ``feedback_ingestion_job`` (feedback + eval_candidates) with run key
  ``feedback-<content hash>-<attempt>``: a new key per attempt, since the daemon never
  relaunches a used key. A file whose content was already ingested (a re-drop) is moved to
  duplicates/. Its cursor holds only the files currently in the inbox (ingestion moves
  files it has ingested to processed/).
- ``review_decisions`` is an external asset: the review CLI records decisions in DuckDB and
  reports a runless materialization of it to the Dagster instance.
- ``golden_set`` follows it: ``review_decisions_sensor`` (running by default) requests a
  golden_set run when review_decisions was materialized after golden_set last was. (Not
  ``AutomationCondition.eager()``: its first evaluation only sets a baseline, so decisions
  made while no daemon ran, e.g. after `make demo`, would wait for the next decision.)
"""

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from eval_pipeline import settings
from eval_pipeline.core.feedback import candidates, golden
from eval_pipeline.core.feedback import inbox as feedback_inbox
from eval_pipeline.core.feedback import ingest as fb
from eval_pipeline.defs.resources import EvalStore

MD = dg.MetadataValue
GROUP = "feedback"
SHA_TAG = "eval_pipeline/feedback_sha256"
FILE_TAG = "eval_pipeline/feedback_file"
ATTEMPT_TAG = "eval_pipeline/feedback_attempt"
# Runs per file content before the sensor gives up on it (a transient failure, e.g. a DuckDB
# lock timeout, gets retried on the next ticks; a file that always fails stops being tried).
MAX_ATTEMPTS = 3


class FeedbackFileConfig(dg.Config):
    """Which inbox file to ingest. Empty path: every complete file now in the inbox."""

    path: str = ""
    sha256: str = ""


def _ingest_one(
    context: dg.AssetExecutionContext, conn, path: Path, expected_sha: str, inbox: Path
) -> dict:
    data = path.read_bytes()
    res = fb.ingest_bytes(conn, data, path.name)
    if expected_sha and res.sha256 != expected_sha:
        # The file changed after the sensor hashed it; what was ingested is what was read.
        context.log.warning(
            f"{path.name}: content changed since the sensor saw it "
            f"(expected {expected_sha[:12]}, read {res.sha256[:12]})"
        )
    summary = fb.summarise_rejects(res.rejects)
    if res.rejected:
        # By kind, with a few examples: one line however many lines were rejected.
        context.log.warning(
            f"{path.name}: {res.rejected} line(s) rejected: {_summary_text(summary)}"
        )
    if path.parent == inbox:
        feedback_inbox.archive(path, inbox, res.sha256)
    context.log.info(
        f"{path.name}: {res.ingested} new, {res.duplicates} already known, {res.rejected} rejected"
    )
    return {
        "file": path.name,
        "sha256": res.sha256,
        "lines": res.lines,
        "ingested": res.ingested,
        "duplicates": res.duplicates,
        "rejected": res.rejected,
        "rejects_summary": summary,
        "already_seen": res.already_seen,
    }


def _summary_text(summary: dict[str, dict]) -> str:
    return "; ".join(
        f"{kind} x{e['count']} (e.g. line {e['examples'][0]['line']}: "
        f"{e['examples'][0]['reason'][:120]})"
        for kind, e in summary.items()
    )


def _merge_summaries(rows: list[dict]) -> dict[str, dict]:
    """Reject counts by kind over all files, with at most REJECT_EXAMPLES examples each."""
    merged: dict[str, dict] = {}
    for r in rows:
        for kind, e in r["rejects_summary"].items():
            entry = merged.setdefault(kind, {"count": 0, "examples": []})
            entry["count"] += e["count"]
            room = fb.REJECT_EXAMPLES - len(entry["examples"])
            entry["examples"] += [{"file": r["file"][:80], **x} for x in e["examples"][:room]]
    return merged


def _rejects_table(merged: dict[str, dict]) -> str:
    out = ["| kind | lines | example file | line | reason |", "|---|---|---|---|---|"]
    for kind, e in merged.items():
        for x in e["examples"]:
            reason = x["reason"].replace("|", "/").replace("\n", " ")
            out.append(f"| {kind} | {e['count']} | {x['file']} | {x['line']} | {reason} |")
    if len(out) == 2:
        return "no rejected lines"
    out.append("\nEvery rejected line, with its reason: table feedback_rejects.")
    return "\n".join(out)


@dg.asset(kinds={"duckdb", "python"}, group_name=GROUP, pool="duckdb")
def feedback(
    context: dg.AssetExecutionContext, config: FeedbackFileConfig, store: EvalStore
) -> dg.MaterializeResult:
    """Thumbs up/down records from the feedback inbox, validated, each record stored once;
    bad lines kept in feedback_rejects with file, line and reason."""
    inbox = settings.feedback_inbox()
    if config.path:
        path = Path(config.path)
        if not path.exists():
            archived = inbox / feedback_inbox.PROCESSED_DIR / path.name
            if not archived.exists():
                raise dg.Failure(f"feedback file {path} is gone (not in the inbox or processed/)")
            path = archived
        paths = [path]
    else:
        paths = feedback_inbox.complete_files(inbox, time.time())
    rows = []
    with store.connect() as conn:
        for path in paths:
            rows.append(_ingest_one(context, conn, path, config.sha256, inbox))
    total = {k: sum(r[k] for r in rows) for k in ("lines", "ingested", "duplicates", "rejected")}
    merged = _merge_summaries(rows)
    by_reason = {kind: e["count"] for kind, e in merged.items()}
    metadata = {
        "files": MD.int(len(rows)),
        "file_names": MD.text(_names([r["file"] for r in rows]) or "none"),
        "lines": MD.int(total["lines"]),
        "records_ingested": MD.int(total["ingested"]),
        "records_already_known": MD.int(total["duplicates"]),
        "lines_rejected": MD.int(total["rejected"]),
        "rejects_by_reason": MD.json(by_reason),
        "rejected_lines": MD.md(_rejects_table(merged)),
    }
    if len(rows) == 1:
        metadata["sha256"] = MD.text(rows[0]["sha256"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    kinds={"duckdb"},
    group_name=GROUP,
    pool="duckdb",
    deps=[feedback, dg.AssetDep("raw_traces", partition_mapping=dg.AllPartitionMapping())],
)
def eval_candidates(context: dg.AssetExecutionContext, store: EvalStore) -> dg.MaterializeResult:
    """One review candidate per thumbs-down trace, joined with the trace (query, answer,
    segment, model); a thumbs-down on an unknown trace is kept and flagged."""
    with store.connect() as conn:
        res = candidates.build_candidates(conn)
    if res.trace_unknown:
        context.log.warning(
            f"{res.trace_unknown} pending candidate(s) have no trace in the "
            "store yet; they are kept and filled in when the trace arrives"
        )
    return dg.MaterializeResult(
        metadata={
            "created": MD.int(res.created),
            "updated": MD.int(res.updated),
            "traces_filled_in": MD.int(res.filled_in),
            "candidates": MD.int(res.total),
            "pending": MD.int(res.by_status.get("pending", 0)),
            "pending_without_trace": MD.int(res.trace_unknown),
            "by_status": MD.json(res.by_status),
        }
    )


review_decisions = dg.AssetSpec(
    "review_decisions",
    deps=[eval_candidates],
    group_name=GROUP,
    kinds={"duckdb"},
    description="Decisions people record with `eval-pipeline review` (table "
    "candidate_reviews). Reported to Dagster by the review CLI as a runless materialization.",
)


@dg.asset(
    kinds={"duckdb", "json"},
    group_name=GROUP,
    pool="duckdb",
    deps=[review_decisions],
)
def golden_set(context: dg.AssetExecutionContext, store: EvalStore) -> dg.MaterializeResult:
    """The golden set (data/golden/golden.jsonl): approved candidates appended with
    provenance, duplicates by normalised input refused; versioned by content hash."""
    path = settings.golden_path()
    with store.connect() as conn:
        res = golden.promote(conn, path)
    for cid, why in res.refused:
        context.log.warning(f"candidate {cid} not promoted: {why}")
    refused = "\n".join(f"- {cid}: {why}" for cid, why in res.refused) or "none"
    return dg.MaterializeResult(
        metadata={
            "golden_version": MD.text(res.version or "empty"),
            "path": MD.path(str(path)),
            "cases": MD.int(res.total_cases),
            "added": MD.int(len(res.added)),
            "added_ids": MD.text(", ".join(res.added) or "none"),
            "refused": MD.int(len(res.refused)),
            "refused_why": MD.md(refused),
        },
        data_version=dg.DataVersion(res.version or "empty"),
    )


feedback_ingestion_job = dg.define_asset_job(
    "feedback_ingestion_job",
    selection=dg.AssetSelection.assets(feedback, eval_candidates),
    description="Ingest one feedback file, then refresh the review candidates.",
)


_IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class _History:
    succeeded: bool = False
    in_progress: bool = False
    failed: int = 0
    last_failed_run: str = ""


def _run_history(instance: dg.DagsterInstance | None, sha: str) -> _History:
    """What the instance knows about ingestion runs of this content (runs tagged with it)."""
    history = _History()
    if instance is None:
        return history
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={SHA_TAG: sha}), limit=4 * MAX_ATTEMPTS
    )
    for record in records:  # newest first
        status = record.dagster_run.status
        if status == dg.DagsterRunStatus.SUCCESS:
            history.succeeded = True
        elif status in _IN_PROGRESS:
            history.in_progress = True
        elif status in _FAILED:
            history.failed += 1
            history.last_failed_run = history.last_failed_run or record.dagster_run.run_id
    return history


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


@dg.sensor(
    job=feedback_ingestion_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def feedback_inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """One ingestion run per complete file in the feedback inbox whose content has not been
    ingested yet; failed runs retried under a new run key, up to MAX_ATTEMPTS. Never opens
    DuckDB."""
    inbox = settings.feedback_inbox()
    previous = json.loads(context.cursor) if context.cursor else {}
    scan = feedback_inbox.scan_inbox(inbox, previous.get("files", {}), time.time())
    by_sha: dict[str, list[str]] = {}
    for name, sha in scan.complete:
        by_sha.setdefault(sha, []).append(name)
    requests, running, copies, moved, exhausted = [], [], [], [], []
    for sha, names in by_sha.items():
        history = _run_history(context.instance, sha)
        if history.succeeded:
            # A re-drop of content already ingested: move it out of the inbox, so it does
            # not sit there (and in the cursor) for ever.
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # moved away while we looked
                    feedback_inbox.archive(inbox / name, inbox, sha, feedback_inbox.DUPLICATES_DIR)
                scan.state.pop(name, None)
                moved.append(name)
            continue
        # Copies of the same content wait for the first file's run; once it has succeeded
        # they are moved to duplicates/.
        copies += names[1:]
        if history.in_progress:
            running.append(names[0])
        elif history.failed >= MAX_ATTEMPTS:
            exhausted.append(f"{names[0]} (last run {history.last_failed_run[:8]})")
        else:
            attempt = history.failed + 1
            requests.append(
                dg.RunRequest(
                    run_key=f"feedback-{sha}-{attempt}",
                    run_config={
                        "ops": {
                            "feedback": {"config": {"path": str(inbox / names[0]), "sha256": sha}}
                        }
                    },
                    tags={SHA_TAG: sha, FILE_TAG: names[0][:200], ATTEMPT_TAG: str(attempt)},
                )
            )
    parts = []
    if moved:
        parts.append(
            f"already ingested, moved to {feedback_inbox.DUPLICATES_DIR}/: {_names(moved)}"
        )
    if running:
        parts.append(f"ingestion run in progress: {_names(running)}")
    if copies:
        parts.append(f"same content as another file in the inbox: {_names(copies)}")
    if exhausted:
        parts.append(
            f"gave up after {MAX_ATTEMPTS} failed runs: {_names(exhausted)}; fix the cause, "
            "then re-execute the last failed run (or launch feedback_ingestion_job with the "
            "file's path)"
        )
    if scan.waiting:
        parts.append(f"still being written: {_names(scan.waiting)}")
    cursor = json.dumps({"files": scan.state}, separators=(",", ":"))
    if requests:
        if parts:
            context.log.info("; ".join(parts))
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(
        skip_reason=dg.SkipReason("; ".join(parts) or f"no new feedback files in {inbox}"),
        cursor=cursor,
    )


def _latest_storage_id(instance: dg.DagsterInstance, key: str) -> int | None:
    records = instance.fetch_materializations(dg.AssetKey(key), limit=1, ascending=False)
    return records.records[0].storage_id if records.records else None


@dg.sensor(
    target=[golden_set],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def review_decisions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Runs golden_set when review decisions were recorded after its last materialization.

    It compares the two assets' latest events in the Dagster instance (never DuckDB), so a
    review made while no daemon was running is promoted on the first tick after it starts.
    """
    decided = _latest_storage_id(context.instance, "review_decisions")
    if decided is None:
        return dg.SensorResult(skip_reason=dg.SkipReason("no review decisions recorded yet"))
    promoted = _latest_storage_id(context.instance, "golden_set")
    if promoted is not None and promoted > decided:
        return dg.SensorResult(skip_reason=dg.SkipReason("golden_set is up to date"))
    # One run per batch of decisions: the run key is the decision event's storage id.
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"review-decisions-{decided}")])
