"""Settings: the example config validates; every error names the file, the field and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import load

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid() -> None:
    settings = load(ROOT / "config" / "edge-agent.example.toml", environ={})
    assert settings.unit.id == "mmu-01"
    assert settings.devices[0].kind == "nonin"


def test_environment_overrides_the_file() -> None:
    settings = load(
        ROOT / "config" / "edge-agent.example.toml",
        environ={"EDGE_AGENT_BROKER__PORT": "1883", "EDGE_AGENT_UNIT__LANGUAGE": "ar"},
    )
    assert settings.broker is not None and settings.broker.port == 1883
    assert settings.unit.language == "ar"


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        ('[unit]\nid = "MMU 1"\n', "unit.id", "lower-case"),
        ('[unit]\nid = "mmu-1"\nlanguage = "de"\n', "unit.language", "one of the values"),
        ('[unit]\nid = "mmu-1"\n[broker]\nport = 70000\n', "broker.port", "example"),
        ('[unit]\nid = "mmu-1"\n[sync]\nbatchsize = 3\n', "sync.batchsize", "spelling"),
        ("[store]\n", "unit", "add this key"),
        ('[unit\nid = "x"', "(syntax)", "TOML syntax"),
    ],
)
def test_errors_name_file_field_and_fix(tmp_path: Path, text: str, field: str, fix: str) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    err = info.value
    assert err.file == str(path)
    assert err.field == field
    assert fix in err.fix
    assert str(path) in str(err) and field in str(err)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy config/edge-agent\.example\.toml"):
        load(tmp_path / "nope.toml", environ={})


def test_duplicate_device_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(
        '[unit]\nid = "mmu-1"\n[[devices]]\nid = "a"\nkind = "nonin"\n'
        '[[devices]]\nid = "a"\nkind = "nonin"\n'
    )
    with pytest.raises(ConfigError, match="used twice"):
        load(path, environ={})
