"""Central is walled off: ``receive`` is one of central's commands (``edge-agent central
receive``, still ``edge-agent receive`` for short), and the EMQX emulation, a test aid, lives
with the tests, not in central's package or on its command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from edge_agent.cli import app


def _command(*path: str) -> Any:
    group: Any = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    return group


def test_receive_is_central_s_command_under_both_names(tmp_path: Path) -> None:
    short, full = _command("receive"), _command("central", "receive")
    for cmd in (short, full):  # one command, two names: the same options and help
        assert [p.name for p in cmd.params] == [p.name for p in full.params]
        assert cmd.help == full.help
    import edge_agent.cli.service as service

    assert not hasattr(service, "receive"), "receive belongs to edge_agent/cli/central.py"
    runner = CliRunner()
    missing = str(tmp_path / "central.db")
    for argv in (["receive"], ["central", "receive"]):
        result = runner.invoke(app, [*argv, "--stats", "--db", missing])
        assert result.exit_code == 4, (argv, result.output)
        assert "no central store here" in result.output


def test_the_emqx_emulation_is_a_test_aid_only(tmp_path: Path) -> None:
    assert importlib.util.find_spec("sync.central.files_emqx") is None
    assert importlib.util.find_spec("tests.files.emqx_emulator") is not None
    result = CliRunner().invoke(
        app,
        [
            "receive",
            "--db",
            str(tmp_path / "c.db"),
            "--broker",
            "127.0.0.1:1",
            "--emulate-emqx-files",
        ],
    )
    assert result.exit_code == 2 and "No such option" in result.output
