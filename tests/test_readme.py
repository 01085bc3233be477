"""README.md cannot rot: every command, config key, variable and link it shows must exist.

* ``harmaug ...`` lines (README: fenced blocks and inline code; docs: fenced blocks) are parsed
  by the real CLI parser: the subcommand path must render its ``--help`` and the whole line must
  parse (a misspelt flag or a bad value fails). ``accelerate launch ... -m distill.trainer
  ARGS`` is ``harmaug distill train ARGS``. ``python benchmarks/X.py ...``: the script exists
  and defines every flag shown.
  ``make X``: the Makefile has the target, and the README shows exactly ``make serve`` and
  ``make test`` (CI runs ``make test``).
* YAML blocks: each ``guard_plugin.HarmAugGuardrail`` entry validates against ``HookConfig``; its
  modes are hooks the guardrail supports. The ``harmaug_*`` tables (README.md, examples/README.md)
  list exactly the ``HookConfig`` fields, with their defaults.
* ``HARMAUG_*`` variables in README.md, docs/ and examples/README.md are settings fields.
* Relative links and images in those files point to files (and headings) that exist; images are
  under 1 MB. JSON blocks parse.

Each check is a function that raises ``AssertionError`` (or the validator's error); the tests at
the end feed each one a misspelt sample to show that it can fail.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from adapters.settings import AdapterSettings
from distill.settings import DistillSettings
from guard_plugin.cli import build_parser
from guard_plugin.hook_config import PREFIX, HookConfig
from guard_plugin.settings import GuardSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
GUARDRAIL_CLASS = "guard_plugin.HarmAugGuardrail"
MAX_IMAGE_BYTES = 1 << 20

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ENV_VAR = re.compile(r"\bHARMAUG_[A-Z0-9_]*[A-Z0-9]\b")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
OWN_COMMANDS = {"harmaug", "make", "python", "python3", "accelerate"}
SHELL = {"bash", "sh", "shell"}


# -- reading markdown ---------------------------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(text)]


def inline_spans(text: str) -> list[str]:
    """Inline code outside fenced blocks, whitespace collapsed (a span may wrap a line)."""
    return [" ".join(span.split()) for span in INLINE.findall(FENCE.sub("", text))]


def shell_lines(block: str) -> Iterator[list[str]]:
    """The words of each command of a shell block: continuations joined, comments and leading
    ``VAR=value`` assignments dropped."""
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            yield words


def commands(text: str) -> list[list[str]]:
    """Every command of the shell blocks and every inline span that is a command we own."""
    found = [
        words
        for language, body in fenced_blocks(text)
        if language in SHELL
        for words in shell_lines(body)
    ]
    for span in inline_spans(text):
        if span.split()[0] in OWN_COMMANDS and " " in span:
            found.append(shlex.split(span))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# -- the checks -----------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _parse(argv: list[str]) -> tuple[int | str | None, str]:
    """Run the real parser on ``argv``; (exit code or None when it parsed, its output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as stop:
            return stop.code, out.getvalue()
    return None, out.getvalue()


def check_harmaug(argv: list[str]) -> None:
    """``harmaug ARGV``: its subcommand path shows ``--help`` and the whole line parses."""
    parser, path = build_parser(argv), []
    for word in argv:
        choices = _subparsers(parser)
        if choices is None or word not in choices.choices:
            break
        path.append(word)
        parser = choices.choices[word]
    asks_help = "--help" in argv or "-h" in argv
    assert asks_help or _subparsers(parser) is None, f"`harmaug {' '.join(argv)}`: no command"
    code, output = _parse([*path, "--help"])
    assert code == 0 and "usage: harmaug" in output, f"`harmaug {' '.join(path)} --help`: {output}"
    if asks_help:
        assert len(path) == len(argv) - 1, f"`harmaug {' '.join(argv)}`: no such command"
        return
    code, output = _parse(argv)
    assert code is None, f"`harmaug {' '.join(argv)}` does not parse: {output.strip()}"


def benchmark_flags(script: Path) -> set[str]:
    """The option strings of every ``add_argument`` call in a benchmark script."""
    flags = {"--help", "-h"}
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            flags.update(
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            )
    return flags


def check_benchmark(argv: list[str]) -> None:
    """``python benchmarks/X.py FLAGS``: the script exists and defines every flag shown."""
    script = ROOT / argv[0]
    assert argv[0].startswith("benchmarks/") and script.is_file(), f"no script {argv[0]}"
    unknown = [
        word.split("=")[0]
        for word in argv[1:]
        if word.startswith("-") and word.split("=")[0] not in benchmark_flags(script)
    ]
    assert not unknown, f"{argv[0]} has no option {unknown}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets: set[str] = set()
    for match in re.finditer(r"^([A-Za-z0-9_.$() -]+?)\s*:(?!=)", text, re.MULTILINE):
        targets.update(match.group(1).split())
    return targets


def check_command(words: list[str]) -> str | None:
    """Check one command we own; return its kind, None for others' commands (curl, export ...)."""
    if words[0] == "harmaug":
        check_harmaug(words[1:])
        return "harmaug"
    if words[0] == "make":
        missing = [target for target in words[1:] if target not in make_targets()]
        assert not missing, f"the Makefile has no target {missing}"
        return "make"
    if words[0] in {"python", "python3"} and words[1].startswith("benchmarks/"):
        check_benchmark(words[1:])
        return "benchmark"
    if words[0] == "accelerate" and "-m" in words:
        module = words[words.index("-m") + 1]
        assert module == "distill.trainer", f"accelerate runs {module}, not distill.trainer"
        check_harmaug(["distill", "train", *words[words.index("-m") + 2 :]])
        return "accelerate"
    return None


def supported_modes() -> set[str]:
    """``SUPPORTED_HOOKS`` of guard_plugin/guardrail.py, read without importing LiteLLM."""
    source = (ROOT / "guard_plugin" / "guardrail.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SUPPORTED_HOOKS" for t in node.targets
        ):
            return {item.attr for item in ast.walk(node.value) if isinstance(item, ast.Attribute)}
    raise AssertionError("guard_plugin/guardrail.py has no SUPPORTED_HOOKS")


def check_guardrails_yaml(body: str) -> int:
    """Validate the harmaug entries of a config block; return how many there were."""
    import guard_plugin

    config = yaml.safe_load(body) or {}
    entries = [
        entry
        for entry in config.get("guardrails") or []
        if entry["litellm_params"].get("guardrail") == GUARDRAIL_CLASS
    ]
    module, name = GUARDRAIL_CLASS.rsplit(".", 1)
    assert module == guard_plugin.__name__ and name in guard_plugin.__all__
    for entry in entries:
        params = entry["litellm_params"]
        mode = params.get("mode", [])
        unknown = set([mode] if isinstance(mode, str) else mode) - supported_modes()
        assert not unknown, f"{entry['guardrail_name']}: unsupported mode {sorted(unknown)}"
        HookConfig.from_params(params, name=entry["guardrail_name"])  # HookConfigError if bad
    return len(entries)


def key_table(text: str) -> dict[str, str]:
    """``{harmaug_* key: default cell}`` of the table whose rows name ``harmaug_*`` keys."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0].startswith(f"`{PREFIX}"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def shown_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def check_key_table(rows: dict[str, str]) -> None:
    """The table lists exactly HookConfig's fields, each with its default (when it has one)."""
    fields = {f"{PREFIX}{name}": field for name, field in HookConfig.model_fields.items()}
    assert set(rows) == set(fields), (
        f"not HookConfig fields: {sorted(set(rows) - set(fields))}; "
        f"missing from the table: {sorted(set(fields) - set(rows))}"
    )
    for key, field in fields.items():
        if field.default is not None:
            expected = f"`{shown_default(field.default)}`"
            assert expected in rows[key], f"{key}: default {expected} not in {rows[key]!r}"


def check_env_var(name: str) -> None:
    """``HARMAUG_X`` is a settings field; ``HARMAUG_A__B`` a nested field of DistillSettings."""
    field = name[len("HARMAUG_") :].lower()
    if "__" in field:
        section, nested = field.split("__", 1)
        model = DistillSettings.model_fields.get(section)
        annotation = model.annotation if model is not None else None
        assert (
            isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and nested in annotation.model_fields
        ), f"{name} is not a DistillSettings field"
        return
    known = (GuardSettings, DistillSettings, AdapterSettings)
    assert any(field in model.model_fields for model in known), f"{name} is not a settings field"


def check_links(doc: Path) -> int:
    """Relative links and images of ``doc`` point to existing files and headings."""
    count = 0
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: link to missing {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, f"{doc.name}: no heading #{anchor}"
        if file.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".svg"}:
            assert file.stat().st_size < MAX_IMAGE_BYTES, f"{target} is over 1 MB"
        count += 1
    return count


# -- the README and its docs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_command_in_the_readme_exists(readme: str) -> None:
    kinds = [check_command(words) for words in commands(readme)]
    assert kinds.count("harmaug") >= 8, "the README's harmaug commands were not found"
    assert {"benchmark", "accelerate"} <= set(kinds)


@pytest.mark.parametrize("doc", DOCS[1:], ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_command_block_in_the_docs_exists(doc: Path) -> None:
    for language, body in fenced_blocks(doc.read_text(encoding="utf-8")):
        if language in SHELL:
            for words in shell_lines(body):
                check_command(words)


def test_the_readme_shows_the_two_make_commands(readme: str) -> None:
    shown = {" ".join(words) for words in commands(readme) if words[0] == "make"}
    assert shown == {"make serve", "make test"}


def test_every_guardrail_entry_in_the_readme_validates(readme: str) -> None:
    blocks = [body for language, body in fenced_blocks(readme) if language in {"yaml", "yml"}]
    assert sum(check_guardrails_yaml(body) for body in blocks) >= 1


@pytest.mark.parametrize(
    "doc", [README, ROOT / "examples" / "README.md"], ids=["README.md", "examples"]
)
def test_the_key_table_lists_every_hook_setting_with_its_default(doc: Path) -> None:
    check_key_table(key_table(doc.read_text(encoding="utf-8")))


def test_json_blocks_parse(readme: str) -> None:
    for language, body in fenced_blocks(readme):
        if language == "json":
            json.loads(body)


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_harmaug_variable_is_a_setting(doc: Path) -> None:
    for name in set(ENV_VAR.findall(doc.read_text(encoding="utf-8"))):
        check_env_var(name)


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert check_links(doc) >= (5 if doc == README else 0)


# -- each check can fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ["harmaug", "distill", "cycel"],  # no such command
        ["harmaug", "distill"],  # a group, not a command
        ["harmaug", "distil", "--help"],
        ["harmaug", "distill", "loop", "--evry", "1h"],  # misspelt flag
        ["harmaug", "distill", "loop", "--every", "hourly"],  # a value the parser refuses
        ["harmaug", "distill", "promote"],  # a required argument left out
        ["make", "serv"],
        ["python", "benchmarks/guard_latency.py", "--run", "30"],
        ["python", "benchmarks/no_such_benchmark.py"],
        ["accelerate", "launch", "-m", "distill.trainer", "--data", "x.jsonl"],  # no --base/--out
    ],
)
def test_a_wrong_command_fails(words: list[str]) -> None:
    with pytest.raises(AssertionError):
        check_command(words)


def test_a_misspelt_guardrail_key_fails() -> None:
    entry = """
guardrails:
  - guardrail_name: harmaug
    litellm_params:
      guardrail: guard_plugin.HarmAugGuardrail
      mode: [pre_call]
      harmaug_acton: block
"""
    with pytest.raises(RuntimeError, match="harmaug_acton"):
        check_guardrails_yaml(entry)
    with pytest.raises(AssertionError, match="unsupported mode"):
        check_guardrails_yaml(entry.replace("[pre_call]", "[before_call]"))


def test_a_table_that_misses_a_key_or_a_default_fails(readme: str) -> None:
    rows = key_table(readme)
    with pytest.raises(AssertionError, match="missing from the table"):
        check_key_table({key: cell for key, cell in rows.items() if key != "harmaug_max_items"})
    with pytest.raises(AssertionError, match="not HookConfig fields"):
        check_key_table({**rows, "harmaug_colour": "`red`"})
    with pytest.raises(AssertionError, match="default"):
        check_key_table({**rows, "harmaug_action": "`flag`"})


@pytest.mark.parametrize("name", ["HARMAUG_THREAD", "HARMAUG_LOOP__TEACHR", "HARMAUG_NOPE__X"])
def test_an_unknown_variable_fails(name: str) -> None:
    with pytest.raises(AssertionError):
        check_env_var(name)


def test_a_broken_link_fails(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md#a-heading) [web](https://example.org)\n", encoding="utf-8")
    assert check_links(doc) == 1
    for broken in ("[x](missing.md)", "[x](there.md#no-such-heading)"):
        doc.write_text(broken, encoding="utf-8")
        with pytest.raises(AssertionError):
            check_links(doc)
