"""The README is the manual: its commands exist, every command is in it, first-run works."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from edge_agent.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> set[str]:
    root = typer.main.get_command(app)
    names: set[str] = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            names.update(f"{name} {s}" for s in sub)
            if getattr(cmd, "invoke_without_command", False):  # `console` serves; `console cert`
                names.add(name)
        else:
            names.add(name)
    return names


def test_every_command_is_documented_and_has_help() -> None:
    runner = CliRunner()
    for name in sorted(commands()):
        assert f"edge-agent {name}" in README, f"document `edge-agent {name}` in the README"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_documented_commands_exist() -> None:
    documented = set(re.findall(r"`edge-agent ([a-z]+(?: [a-z]+)?)", README))
    known = commands()
    for doc in documented:
        assert doc in known or doc.split()[0] in known, f"README mentions unknown {doc!r}"


def test_first_run_scripts_exist_and_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/demo" in README and "bash scripts/test" in README
    for script in ("demo", "test", "setup"):
        assert (ROOT / "scripts" / script).is_file()
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_example_config_key_is_documented_in_the_example() -> None:
    from edge_agent.settings import Settings

    text = (ROOT / "config" / "edge-agent.example.toml").read_text()
    for section, model in Settings.model_fields.items():
        if section == "devices":
            continue
        assert f"[{section}]" in text, section
        sub = model.annotation
        fields = getattr(sub, "model_fields", None) or getattr(
            next((a for a in getattr(sub, "__args__", ()) if hasattr(a, "model_fields")), None),
            "model_fields", {})
        for key in fields:
            # Keys without a TOML default (None) are shown commented out.
            assert re.search(rf"^(# )?{key} = ", text, re.M), f"{section}.{key} not in the example"
