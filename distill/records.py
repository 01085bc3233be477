"""The Example record: one (prompt, response) item of training or evaluation data, one JSONL line.

Identity. ``id`` is a content hash: ``sha256`` (hex) of the UTF-8 JSON array
``[normalize(prompt), normalize(response)]`` (``null`` for a missing response), where
``normalize`` applies Unicode NFC and collapses every run of whitespace (spaces, tabs, newlines)
into one space, with none at either end. Case and punctuation are kept. So the same text with
different line wrapping is the same example, and a prompt alone is a different example from the
same prompt with a response. The text fields themselves are stored as given.

``prompt_key(prompt)`` is the same hash over the prompt alone: all records that share a prompt
share it (the seed splits group by it so that a prompt never lands in two splits).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class RecordsError(ValueError):
    """A records file that cannot be read; the message names the file and line."""


def normalize(text: str) -> str:
    """The text form that ids are computed from: NFC, whitespace runs collapsed, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _digest(value: Any) -> str:
    payload = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def content_id(prompt: str, response: str | None = None) -> str:
    """The id of a (prompt, response) pair; see the module docstring for the normalisation."""
    return _digest([normalize(prompt), None if response is None else normalize(response)])


def prompt_key(prompt: str) -> str:
    """The id of a prompt alone (shared by every record with this prompt)."""
    return content_id(prompt, None)


class Example(BaseModel):
    """One record. ``label``: 1 unsafe, 0 safe, None unknown; ``p_unsafe``: the teacher's score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default="", description="Content hash; computed when missing.")
    prompt: str
    response: str | None = None
    label: Literal[0, 1] | None = None
    p_unsafe: float | None = Field(default=None, ge=0.0, le=1.0)
    source: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _content_hash_id(cls, data: Any) -> Any:
        """Fill a missing id from the content; refuse one that is not the content hash."""
        if not isinstance(data, dict):
            return data
        prompt, response = data.get("prompt"), data.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str | None):
            return data  # field validation reports the type error
        expected = content_id(prompt, response)
        if not data.get("id"):
            return {**data, "id": expected}
        if data["id"] != expected:
            raise ValueError(
                f"id {data['id']!r} is not the content hash of prompt/response ({expected}); "
                "drop the id to have it recomputed"
            )
        return data


def example(
    prompt: str,
    response: str | None = None,
    *,
    label: Literal[0, 1] | None = None,
    p_unsafe: float | None = None,
    source: str,
    meta: dict[str, Any] | None = None,
) -> Example:
    """Build an Example, computing its id from the content."""
    return Example(
        prompt=prompt,
        response=response,
        label=label,
        p_unsafe=p_unsafe,
        source=source,
        meta=meta or {},
    )


def read_jsonl(path: str | Path) -> list[Example]:
    """Read records; a malformed line raises RecordsError naming ``file:line`` and the reason."""
    path = Path(path)
    records: list[Example] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(Example.model_validate_json(line))
            except ValidationError as exc:
                reason = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'line'}: {err['msg']}"
                    for err in exc.errors()
                )
                raise RecordsError(f"{path}:{lineno}: invalid record: {reason}") from None
    return records


def json_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, parsed object)`` of every non-blank line of a JSON-lines file that is not
    a record file (written sets read by their own parsers, which name the line in errors)."""
    path = Path(path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield f"{path.name}:{lineno}", json.loads(line)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[TextIO]:
    """Write a text file atomically: into a temp file beside it, renamed over ``path`` on success.

    Readers see the old file or the complete new one, never a partial one; on error the temp file
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[Example]) -> Path:
    """Write records, one JSON object a line, atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(record.model_dump_json())
            handle.write("\n")
    return Path(path)


def dedup(records: Sequence[Example]) -> list[Example]:
    """One record per id, in first-seen order.

    The first record of an id keeps its text, source and meta. When duplicates disagree:
    ``label`` -- unsafe wins (1 if any duplicate says 1; None only if all are None), the
    conservative choice for a guard, and ``meta["label_conflict"] = True`` marks it;
    ``p_unsafe`` -- the maximum of the known scores. ``meta["also_in"]`` lists the other sources
    the same content came from. An unsafe result gets the union of the duplicates'
    ``meta["categories"]`` (Llama Guard 3 codes) when any of them has some.
    """
    groups: dict[str, list[Example]] = {}
    for record in records:
        groups.setdefault(record.id, []).append(record)
    out: list[Example] = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            out.append(first)
            continue
        labels = {r.label for r in group if r.label is not None}
        scores = [r.p_unsafe for r in group if r.p_unsafe is not None]
        meta = dict(first.meta)
        also_in = sorted({r.source for r in group[1:]} - {first.source})
        if also_in:
            meta["also_in"] = also_in
        if len(labels) > 1:
            meta["label_conflict"] = True
        codes = {code for r in group if r.label == 1 for code in r.meta.get("categories") or ()}
        if codes and max(labels, default=None) == 1:
            from distill.categories import sort_codes

            meta["categories"] = list(sort_codes(codes))
        out.append(
            first.model_copy(
                update={
                    "label": max(labels) if labels else None,
                    "p_unsafe": max(scores) if scores else None,
                    "meta": meta,
                }
            )
        )
    return out
