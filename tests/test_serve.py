"""``harmaug serve`` before the proxy starts: master key, guard checks, clear failures.

(The success path execs the LiteLLM proxy; tests/test_proxy.py starts the gateway through it.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guard_plugin.cli import main
from guard_plugin.serve import DEFAULT_CONFIG, ensure_master_key


@pytest.fixture()
def serve_env(monkeypatch: pytest.MonkeyPatch, harmaug_home: Path) -> Path:
    """serve writes HARMAUG_GUARD and LITELLM_MASTER_KEY into os.environ: restore them after."""
    monkeypatch.setenv("HARMAUG_GUARD", "champion")
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-test-" + "x" * 32)
    return harmaug_home


def test_a_missing_master_key_is_generated_strong() -> None:
    environ: dict[str, str] = {}
    key = ensure_master_key(environ)
    assert key is not None and key.startswith("sk-harmaug-") and len(key) >= 40
    assert environ["LITELLM_MASTER_KEY"] == key
    assert ensure_master_key({"LITELLM_MASTER_KEY": key}) is None
    assert ensure_master_key({}) != key


def test_a_short_master_key_is_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        ensure_master_key({"LITELLM_MASTER_KEY": "sk-1234"})


def test_a_missing_guard_stops_before_the_proxy(
    serve_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--guard", str(tmp_path / "nowhere"), "--no-bootstrap"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harmaug serve:")
    assert "nowhere" in err


def test_no_champion_without_bootstrap_says_how_to_build_one(
    serve_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--no-bootstrap"]) == 2
    assert "harmaug distill bootstrap" in capsys.readouterr().err


def test_a_tampered_guard_is_named(
    serve_env: Path, tiny_torch_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_torch_bundle, copy)
    (copy / "tokenizer.json").write_text("{}")
    assert main(["serve", "--guard", str(copy)]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def test_a_missing_config_is_refused(
    serve_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert DEFAULT_CONFIG.is_file()  # the default is the shipped offline example
