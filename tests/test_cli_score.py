"""``harmaug score``: one JSON verdict on stdout; a missing guard is a clear message, exit code 2."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guard_plugin.cli import VERDICT_KEYS, main
from tests.tiny_guard import SAFE, UNSAFE


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMAUG_THREADS", "1")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_score_prints_one_json_verdict(
    tiny_torch_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["score", UNSAFE[0], "--guard", str(tiny_torch_bundle)], capsys)
    assert code == 0
    (line,) = out.splitlines()
    verdict = json.loads(line)
    assert tuple(verdict) == VERDICT_KEYS
    assert verdict["unsafe"] is True and verdict["p_unsafe"] > 0.9
    assert verdict["guard_version"] == "tiny-torch-1" and verdict["threshold"] == 0.5
    assert verdict["windows"] == 1 and verdict["window_cap_hit"] is False


def test_score_a_response_from_stdin_with_options(
    tiny_torch_bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SAFE[0]))
    argv = ["score", "-", "--response", SAFE[1], "--guard", str(tiny_torch_bundle)]
    code, out, _ = run([*argv, "--backend", "torch", "--threshold", "0.0"], capsys)
    verdict = json.loads(out)
    assert code == 0 and verdict["p_unsafe"] < 0.1
    assert verdict["unsafe"] is True and verdict["threshold"] == 0.0  # threshold overridden


def test_guard_from_the_registry_champion(
    tiny_torch_bundle: Path, harmaug_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["score", SAFE[0]], capsys)
    assert code == 2 and out == ""
    assert "no champion guard" in err and "harmaug distill bootstrap" in err
    assert "Traceback" not in err
    versions = harmaug_home / "registry" / "versions"
    shutil.copytree(tiny_torch_bundle, versions / "v1")
    (harmaug_home / "registry" / "champion.json").write_text('{"version": "v1"}')
    code, out, _ = run(["score", SAFE[0]], capsys)
    assert code == 0 and json.loads(out)["unsafe"] is False


def test_tampered_guard_is_refused_naming_the_file(
    tiny_torch_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(tiny_torch_bundle, root)
    (root / "config.json").write_text("{}")
    code, out, err = run(["score", SAFE[0], "--guard", str(root)], capsys)
    assert code == 2 and out == ""
    assert f"{root / 'config.json'}: sha256 mismatch" in err


def test_console_script_missing_guard_exits_2_without_traceback_or_heavy_imports(
    tmp_path: Path,
) -> None:
    probe = (
        "import sys\n"
        "from guard_plugin.cli import main\n"
        "code = main(['score', 'hello', '--guard', sys.argv[1]])\n"
        "print(sorted(m for m in ('litellm', 'distill.cli') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "HARMAUG_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert "not found" in result.stderr and "--guard" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == "[]"  # `harmaug score` imports neither LiteLLM nor distill


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "score" in capsys.readouterr().out
