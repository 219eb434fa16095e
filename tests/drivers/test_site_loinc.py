"""Site test maps: the LOINC is the identity (issue 20). A local quantity name with a LOINC
the catalogue knows needs nothing more; one with a LOINC it lacks takes its unit from each
result, UCUM-checked (a result without a UCUM unit is rejected, its bytes kept). Through the
ASTM decoder as the analyser's records arrive, and ``edge-agent decode astm --test-map``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drivers.base import Rejected
from drivers.protocols import astm
from drivers.protocols.sitecodes import CodeMapError, load_code_map
from drivers.simulators.astm_analyser import Result, ResultMessage, encode_records, frames
from edge_agent.cli import app
from edge_agent.models import Measurement
from tests.drivers.streams import play

ALBUMIN = "1751-7"  # a valid LOINC the catalogue does not have
SITE_MAP = {
    "CHOL": {"quantity": "chol", "loinc": "2093-3"},
    "ALB": {"quantity": "albumin", "loinc": ALBUMIN},
}


def results(test_map: dict[str, Any], *rows: Result) -> tuple[list[Measurement], list[Rejected]]:
    message = ResultMessage("P1", "S1", rows)
    decoder = astm.AstmDecoder(astm.load_test_map(test_map))
    events, _ = play(decoder, [b"\x05", *frames(encode_records(message)), b"\x04"])
    return (
        [e for e in events if isinstance(e, Measurement)],
        [e for e in events if isinstance(e, Rejected)],
    )


def test_a_local_name_with_a_catalogue_loinc_is_the_catalogue_quantity() -> None:
    assert load_code_map(SITE_MAP)["CHOL"] == astm.TestMapping("cholesterol", "2093-3")
    (m,), rejected = results(SITE_MAP, Result("CHOL", "212", "mg/dL", completed="20240611"))
    assert rejected == []
    assert (m.quantity, m.value, m.unit, m.loinc) == ("cholesterol", 212.0, "mg/dL", "2093-3")


def test_an_unknown_loinc_takes_its_unit_from_each_result_ucum_checked() -> None:
    found, rejected = results(
        SITE_MAP,
        Result("ALB", "4.1", "g/dL", completed="20240611093000"),
        Result("ALB", "41", "g/L", completed="20240611093100"),  # another UCUM unit: as sent
        Result("ALB", "4.0", "grams per dl", completed="20240611093200"),
        Result("ALB", "4.2", "", completed="20240611093300"),
    )
    assert [(m.quantity, m.value, m.unit, m.loinc) for m in found] == [
        ("albumin", 4.1, "g/dL", ALBUMIN),
        ("albumin", 41.0, "g/L", ALBUMIN),
    ]
    assert all(
        "unit-unmapped" not in m.flags and ("quantity-source", "site") in m.context for m in found
    )
    assert [r.reason for r in rejected] == ["unit-not-ucum", "unit-not-ucum"]
    assert b"grams per dl" in rejected[0].raw  # the record kept whole


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"quantity": "chol"}, "give its loinc"),
        (
            {"quantity": "chol", "loinc": "2093-3", "ucum": "mg/dL"},
            "LOINC 2093-3 is the catalogue's 'cholesterol': remove ['ucum']",
        ),
        ({"quantity": "albumin", "loinc": ALBUMIN, "alert": [3, 5]}, "need the ucum unit"),
        ({"quantity": "albumin", "loinc": "1751-8"}, "not a LOINC code"),
    ],
)
def test_entries_that_cannot_be_read_are_refused_naming_the_code(
    entry: dict[str, Any], problem: str
) -> None:
    with pytest.raises(CodeMapError, match="'X1'") as info:
        load_code_map({"X1": entry})
    assert problem in str(info.value)


# -- the decode command ------------------------------------------------------------------------

CAPTURE = b"".join(
    [
        b"\x05",
        *frames(
            encode_records(
                ResultMessage(
                    "P1", "S1", (Result("CHOL", "212", "mg/dL", completed="20240611093000"),)
                )
            )
        ),
        b"\x04",
    ]
).hex()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"CHOL": {"quantity": "chol"}}', "code 'CHOL': unknown quantity 'chol'"),
        ('{"CHOL": {"quantity": "cholesterol", "unit": "mg/dL"}}', "code 'CHOL'"),
        ('{"CHOL": ', "not JSON"),
        ('["CHOL"]', "expected an object"),
    ],
)
def test_decode_with_a_refused_map_says_one_line_and_exits_2(
    tmp_path: Path, text: str, named: str
) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(app, ["decode", "astm", "--hex", CAPTURE, "--test-map", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {path}: --test-map: ") and named in lines[0]
    assert "Fix: " in lines[0]


def test_decode_with_the_site_map_prints_the_catalogue_quantity(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(SITE_MAP))
    done = subprocess.run(  # the real console entry point, in its own process
        [
            sys.executable,
            "-m",
            "edge_agent",
            "decode",
            "astm",
            "--hex",
            CAPTURE,
            "--test-map",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (m,) = json.loads(done.stdout)["measurements"]
    assert (m["quantity"], m["loinc"], m["unit"]) == ("cholesterol", "2093-3", "mg/dL")
