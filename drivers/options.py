"""The ``options`` table of each device kind, checked when the config is loaded.

Each kind in :mod:`drivers.registry` names its check. A check is pure: it looks only at the
option values and returns :class:`OptionProblem` s (the option's key, what is wrong, the fix);
none means the decoder can be built from these options. Options that name a file (the ASTM
test map, the HL7 code map: :mod:`drivers.protocols.sitecodes`) have a second check,
:func:`astm_files` / :func:`hl7_files`, that reads and validates the file (every code, every
site-defined quantity's LOINC, UCUM unit and names); the config loader runs it, the
sample-config tests do not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Options = Mapping[str, Any]


@dataclass(frozen=True)
class OptionProblem:
    key: str  # the option's key in the device's ``options`` table
    problem: str
    fix: str


OptionCheck = Callable[[Options], list[OptionProblem]]


def _unknown(options: Options, known: tuple[str, ...]) -> list[OptionProblem]:
    allowed = f"this kind takes {', '.join(known)}" if known else "this kind takes no options"
    return [
        OptionProblem(key, "unknown option", f"remove it ({allowed})")
        for key in options
        if key not in known
    ]


def _choice(options: Options, key: str, choices: tuple[Any, ...]) -> list[OptionProblem]:
    if key not in options:
        return []
    value = options[key]
    # bool is an int in Python: `data_format = true` is not format 1.
    if value in choices and type(value) is type(choices[0]):
        return []
    listed = ", ".join(json.dumps(c) for c in choices)
    return [OptionProblem(key, f"{value!r} is not supported", f"use one of {listed}")]


def _flag(options: Options, key: str) -> list[OptionProblem]:
    if key not in options or isinstance(options[key], bool):
        return []
    return [
        OptionProblem(
            key, f"{options[key]!r} is not true or false", "use true or false (no quotes)"
        )
    ]


def no_options(options: Options) -> list[OptionProblem]:
    return _unknown(options, ())


def nonin(options: Options) -> list[OptionProblem]:
    from drivers.protocols.nonin import FORMATS

    return [
        *_unknown(options, ("data_format", "select_format")),
        *_choice(options, "data_format", FORMATS),
        *_flag(options, "select_format"),
    ]


def cms50(options: Options) -> list[OptionProblem]:
    # "v7" also needs baudrate = 115200 and parity = "N" in the device table.
    return [*_unknown(options, ("protocol",)), *_choice(options, "protocol", ("legacy", "v7"))]


def scale(options: Options) -> list[OptionProblem]:
    from drivers.protocols.scale import GRAMMARS

    return [*_unknown(options, ("grammar",)), *_choice(options, "grammar", GRAMMARS)]


_TEST_MAP_FIX = (
    "a JSON file of test code -> quantity (catalogue key, or a site definition with "
    "loinc/ucum/names), see config/devices/astm-test-map.example.json"
)
_CODE_MAP_FIX = (
    "a JSON file of OBX-3 code -> quantity (catalogue key, or a site definition "
    "with loinc/ucum/names), see config/devices/hl7-code-map.example.json"
)


def _map_path(options: Options, key: str, fix: str) -> list[OptionProblem]:
    path = options.get(key)
    if path is not None and (not isinstance(path, str) or not path):
        return [OptionProblem(key, f"{path!r} is not a file path", f"give the path of {fix}")]
    return []


def astm(options: Options) -> list[OptionProblem]:
    return [*_unknown(options, ("test_map",)), *_map_path(options, "test_map", _TEST_MAP_FIX)]


def hl7(options: Options) -> list[OptionProblem]:
    return [*_unknown(options, ("code_map",)), *_map_path(options, "code_map", _CODE_MAP_FIX)]


def read_code_map(path: str) -> Any:
    """The JSON of a code map file; raises OSError, UnicodeDecodeError, JSONDecodeError."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _map_file(options: Options, key: str, fix: str) -> list[OptionProblem]:
    """Read the map the decoder will read: present, UTF-8 JSON, every code valid."""
    from drivers.protocols.sitecodes import CodeMapError, load_code_map

    path = options.get(key)
    if not isinstance(path, str) or not path:
        return []
    try:
        raw = read_code_map(path)
    except FileNotFoundError:
        return [OptionProblem(key, f"no file {path}", f"create it ({fix}) or correct the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return [
            OptionProblem(
                key,
                f"cannot read {path}: {exc}",
                "make it a readable UTF-8 file for the agent's user",
            )
        ]
    except json.JSONDecodeError as exc:
        return [
            OptionProblem(key, f"{path} is not valid JSON ({exc})", "fix the JSON at that line")
        ]
    try:
        load_code_map(raw)
    except CodeMapError as exc:
        return [
            OptionProblem(
                key,
                f"{path}: {exc}",
                "map each code to a quantity of edge_agent/catalogue.toml, or "
                "define it with loinc, ucum and names (en, fr, ar)",
            )
        ]
    return []


def astm_files(options: Options) -> list[OptionProblem]:
    return _map_file(options, "test_map", _TEST_MAP_FIX)


def hl7_files(options: Options) -> list[OptionProblem]:
    return _map_file(options, "code_map", _CODE_MAP_FIX)
