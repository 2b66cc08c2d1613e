"""The feedback inbox folder: which files in it are complete, and where they go after.

Writers (the collector, or a person copying a file in) put JSON-lines files in the inbox;
the collector writes into ``.incoming/`` first and renames a file in when it is complete.
Ingested files move to ``processed/``, re-drops of content already ingested to
``duplicates/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

FILE_SUFFIXES = (".jsonl", ".ndjson", ".json")
INCOMING_DIR = ".incoming"  # where the collector writes; files are renamed out when complete
PROCESSED_DIR = "processed"  # where ingestion moves files it has ingested
DUPLICATES_DIR = "duplicates"  # where the sensor moves re-drops of content already ingested


def is_candidate_name(name: str) -> bool:
    """A name a complete feedback file can have: visible, with a JSON-lines suffix.

    Writers use a dot-prefixed name or a .tmp/.part suffix (or the .incoming folder) while
    writing and rename when done, so such names are never picked up.
    """
    return not name.startswith((".", "_", "~")) and name.endswith(FILE_SUFFIXES)


def archive(path: Path, inbox: Path, sha256: str, folder: str = PROCESSED_DIR) -> Path:
    """Move a file out of the inbox (into processed/ or duplicates/), never overwriting."""
    dest_dir = inbox / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    if dest.exists():
        dest = dest_dir / f"{path.stem}.{sha256[:12]}{path.suffix}"
    if dest.exists():  # the same content was archived under this name already
        path.unlink()
        return dest
    path.replace(dest)
    return dest


# What "complete" means for a file in the inbox (the sensor's rule, see ARCHITECTURE.md, "Feedback to eval"):
# a visible name (is_candidate_name), a regular file directly in the inbox, not empty, and
# either unchanged (size and mtime) since the previous look or not modified for
# SETTLE_SECONDS. Renamed-in files (the collector's) are complete at once; a file being
# copied in by hand is picked up once it has stopped growing.
SETTLE_SECONDS = 5.0


@dataclass
class InboxScan:
    # (name, sha256) of every complete file now in the inbox, by name. Whether its content
    # still needs a run is the caller's question (the sensor asks the run history).
    complete: list[tuple[str, str]]
    waiting: list[str]  # not complete yet
    state: dict[str, list]  # name -> [size, mtime_ns, sha256 | None]: the next cursor


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_inbox(
    inbox: Path, previous: dict[str, list], now: float, settle_seconds: float = SETTLE_SECONDS
) -> InboxScan:
    """Look at the inbox once: which files are complete, with their content hash.

    ``previous`` is the last scan's state; a file unchanged since then is not hashed again.
    Only files present now are kept in the new state, so it stays as small as the inbox
    (ingestion moves files out to processed/, the sensor moves re-drops to duplicates/).
    """
    scan = InboxScan([], [], {})
    if not inbox.is_dir():
        return scan
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if not is_candidate_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved away while we looked
            continue
        fingerprint = [st.st_size, st.st_mtime_ns]
        prev = previous.get(entry.name)
        if prev and prev[:2] == fingerprint and prev[2]:
            scan.state[entry.name] = prev
            scan.complete.append((entry.name, prev[2]))
            continue
        settled = (prev is not None and prev[:2] == fingerprint) or (
            now - st.st_mtime >= settle_seconds
        )
        if st.st_size == 0 or not settled:
            scan.state[entry.name] = [*fingerprint, None]
            scan.waiting.append(entry.name)
            continue
        path = Path(entry.path)
        try:
            sha = _sha256_path(path)
            after = path.stat()
        except FileNotFoundError:
            continue
        if [after.st_size, after.st_mtime_ns] != fingerprint:  # written to while hashing
            scan.state[entry.name] = [after.st_size, after.st_mtime_ns, None]
            scan.waiting.append(entry.name)
            continue
        scan.state[entry.name] = [*fingerprint, sha]
        scan.complete.append((entry.name, sha))
    return scan


def complete_files(inbox: Path, now: float, settle_seconds: float = SETTLE_SECONDS) -> list[Path]:
    """Files in the inbox that are complete by the settle rule alone (for catch-up runs)."""
    scan = scan_inbox(inbox, {}, now, settle_seconds)
    return [inbox / name for name, _ in scan.complete]
