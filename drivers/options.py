"""The ``options`` table of each device kind, checked when the config is loaded.

Each kind in :mod:`drivers.registry` names its check. A check is pure: it looks only at the
option values and returns :class:`OptionProblem` s (the option's key, what is wrong, the fix);
none means the decoder can be built from these options. Options that name a file (the ASTM
test map) have a second check, :func:`astm_files`, that reads the file; the config loader runs
it, the sample-config tests do not.
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
    return [OptionProblem(key, f"{options[key]!r} is not true or false",
                          "use true or false (no quotes)")]


def no_options(options: Options) -> list[OptionProblem]:
    return _unknown(options, ())


def nonin(options: Options) -> list[OptionProblem]:
    from drivers.protocols.nonin import FORMATS

    return [
        *_unknown(options, ("data_format", "select_format")),
        *_choice(options, "data_format", FORMATS),
        *_flag(options, "select_format"),
    ]


def scale(options: Options) -> list[OptionProblem]:
    from drivers.protocols.scale import GRAMMARS

    return [*_unknown(options, ("grammar",)), *_choice(options, "grammar", GRAMMARS)]


_TEST_MAP_FIX = ("a JSON file of test code -> quantity/loinc, "
                 "see config/devices/astm-test-map.example.json")


def astm(options: Options) -> list[OptionProblem]:
    problems = _unknown(options, ("test_map",))
    path = options.get("test_map")
    if path is not None and (not isinstance(path, str) or not path):
        problems.append(OptionProblem("test_map", f"{path!r} is not a file path",
                                      f"give the path of {_TEST_MAP_FIX}"))
    return problems


def astm_files(options: Options) -> list[OptionProblem]:
    """Read the test map the decoder will read: present, UTF-8 JSON, every code valid."""
    from drivers.protocols.astm import TestMapError, load_test_map

    path = options.get("test_map")
    if not isinstance(path, str) or not path:
        return []
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [OptionProblem("test_map", f"no file {path}",
                              f"create it ({_TEST_MAP_FIX}) or correct the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return [OptionProblem("test_map", f"cannot read {path}: {exc}",
                              "make it a readable UTF-8 file for the agent's user")]
    except json.JSONDecodeError as exc:
        return [OptionProblem("test_map", f"{path} is not valid JSON ({exc})",
                              "fix the JSON at that line")]
    try:
        load_test_map(raw)
    except TestMapError as exc:
        return [OptionProblem("test_map", f"{path}: {exc}",
                              "map each code to a quantity of edge_agent/catalogue.toml")]
    return []
