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


UNIT = '[unit]\nid = "mmu-1"\n'


@pytest.mark.parametrize(
    ("device", "field", "fix"),
    [
        (
            'id = "ox"\nkind = "nonnin"\nport = "/dev/ttyUSB0"',
            "devices[1] 'ox'.kind",
            'did you mean "nonin"',
        ),
        (
            'id = "ox"\nkind = "nonin"\nport = "/dev/ttyUSB0"\noptions = { data_format = 3 }',
            "devices[1] 'ox'.options.data_format",
            "use one of 2, 7, 8, 13",
        ),
        (
            'id = "ox"\nkind = "nonin"\nport = "/dev/ttyUSB0"\noptions = { data_format = "7" }',
            "devices[1] 'ox'.options.data_format",
            "use one of 2, 7, 8, 13",
        ),
        (
            'id = "ox"\nkind = "nonin"\nport = "/dev/ttyUSB0"\noptions = { select_format = 1 }',
            "devices[1] 'ox'.options.select_format",
            "true or false",
        ),
        (
            'id = "kg"\nkind = "scale"\nport = "/dev/ttyUSB0"\noptions = { grammar = "dial" }',
            "devices[1] 'kg'.options.grammar",
            '"indicator", "balance"',
        ),
        (
            'id = "gps"\nkind = "nmea"\nport = "/dev/ttyUSB0"\noptions = { rate = 5 }',
            "devices[1] 'gps'.options.rate",
            "takes no options",
        ),
        ('id = "gps"\nkind = "nmea"', "devices[1] 'gps'.port", "/dev/serial/by-id"),
        ('id = "cuff"\nkind = "ble-blood-pressure"', "devices[1] 'cuff'.address", "ble scan"),
        (
            'id = "lab"\nkind = "astm"\nport = "/dev/ttyUSB0"\noptions = { test_map = 5 }',
            "devices[1] 'lab'.options.test_map",
            "astm-test-map.example.json",
        ),
        (
            'id = "lab"\nkind = "astm"\nport = "/dev/ttyUSB0"\n'
            'options = { test_map = "/nonexistent/map.json" }',
            "devices[1] 'lab'.options.test_map",
            "create it",
        ),
        ('id = "ox"\nkind = "nonin"\nbaudrate = 12', "devices[1] 'ox'.baudrate", "example"),
    ],
)
def test_device_kind_options_and_transport_fields_are_checked_at_load(
    tmp_path: Path, device: str, field: str, fix: str
) -> None:
    path = tmp_path / "unit.toml"
    good = '[[devices]]\nid = "monitor"\nkind = "hl7-mllp"\n'
    path.write_text(f"{UNIT}{good}[[devices]]\n{device}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert info.value.file == str(path)
    assert info.value.field == field
    assert fix in info.value.fix


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2", "not valid JSON"),
        ('{"GLU": {"quantity": "glucoze"}}', "unknown quantity"),
        (b"\xff\xfe{}", "cannot read"),
    ],
)
def test_astm_test_map_is_read_at_load(tmp_path: Path, content: str | bytes, problem: str) -> None:
    test_map = tmp_path / "map.json"
    if isinstance(content, bytes):
        test_map.write_bytes(content)
    else:
        test_map.write_text(content, encoding="utf-8")
    path = tmp_path / "unit.toml"
    path.write_text(
        f'{UNIT}[[devices]]\nid = "lab"\nkind = "astm"\nport = "/dev/ttyS0"\n'
        f'options = {{ test_map = "{test_map}" }}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=problem) as info:
        load(path, environ={})
    assert info.value.field == "devices[0] 'lab'.options.test_map"


def test_a_disabled_device_needs_no_port_but_a_known_kind(tmp_path: Path) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(f'{UNIT}[[devices]]\nid = "gps"\nkind = "nmea"\nenabled = false\n')
    assert load(path, environ={}).devices[0].port is None
    path.write_text(f'{UNIT}[[devices]]\nid = "gps"\nkind = "gsp"\nenabled = false\n')
    with pytest.raises(ConfigError, match="unknown device kind"):
        load(path, environ={})


def test_every_sample_device_config_loads_with_its_files(tmp_path: Path) -> None:
    # The registry test validates the samples without reading files; here with them.
    example_map = ROOT / "config" / "devices" / "astm-test-map.example.json"
    for sample in sorted((ROOT / "config" / "devices").glob("*.toml")):
        text = sample.read_text(encoding="utf-8").replace(
            "/etc/edge-agent/astm-test-map.json", str(example_map)
        )
        path = tmp_path / sample.name
        path.write_text(UNIT + text, encoding="utf-8")
        assert len(load(path, environ={}).devices) == 1, sample.name


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("EDGE_AGENT_BROKER__PORT", "eighty", "broker.port"),
        ("EDGE_AGENT_UNIT__LANGUAGE", "de", "unit.language"),
        ("EDGE_AGENT_SYNC__BATCHSIZE", "3", "sync.batchsize"),
        ("EDGE_AGENT_NOSECTION__KEY", "1", "nosection"),
    ],
)
def test_a_bad_environment_override_names_the_variable_not_the_file(
    variable: str, value: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(ROOT / "config" / "edge-agent.example.toml", environ={variable: value})
    err = info.value
    assert err.file == f"environment variable {variable}"
    assert err.field == field
    assert variable in err.fix and "example.toml" not in err.file


def test_a_directory_or_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as info:
        load(tmp_path, environ={})
    assert "--config" in info.value.fix
    latin1 = tmp_path / "unit.toml"
    latin1.write_bytes('[unit]\nid = "mmu-1"\n# unité mobile\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load(latin1, environ={})
    assert "UTF-8" in info.value.fix


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90", 90.0), ("-2.5", -2.5), ('"PT90S"', 90.0), ('"-PT2M"', -120.0), ('"PT1H30M"', 5400.0)],
)
def test_a_device_clock_offset_is_seconds_or_an_iso_duration(
    tmp_path: Path, value: str, seconds: float
) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(
        f'{UNIT}[[devices]]\nid = "a"\nkind = "nonin"\nport = "/dev/ttyUSB0"\n'
        f"clock_offset = {value}\n"
    )
    assert load(path, environ={}).devices[0].clock_offset.total_seconds() == seconds


@pytest.mark.parametrize("value", ['"ten minutes"', "1e12"])
def test_a_bad_clock_offset_is_refused_at_load(tmp_path: Path, value: str) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(
        f'{UNIT}[[devices]]\nid = "a"\nkind = "nonin"\nport = "/dev/ttyUSB0"\n'
        f"clock_offset = {value}\n"
    )
    with pytest.raises(ConfigError, match="clock_offset"):
        load(path, environ={})
