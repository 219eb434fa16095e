"""Issue 19: the codec serializes a batch from per-shape templates (sync/fhir_text.py), and
that text is exactly ``json.dumps`` of the Bundle sync/fhir.py builds, character for
character, for any rows; and both are, for rows of every shape, what sync/fhir.py wrote before
the encoding was made cheaper (``golden/bundle-v3.json``): the wire output did not change."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync import codec, fhir, fhir_text
from tests.sync.golden_rows import golden_rows
from tests.sync.test_fhir import ENCOUNTER, ENCOUNTER_INFO, EPOCH, NOW, STATUSES, row

GOLDEN = Path(__file__).parent / "golden" / "bundle-v3.json"

QUANTITIES = [
    "spo2",
    "pulse_rate",
    "systolic_bp",
    "diastolic_bp",
    "mean_arterial_pressure",
    "body_temperature",
    "glucose",
    "latitude",
    "longitude",
    "body_fat_percentage",
]
# Texts that need JSON escapes, non-ASCII, and the templates' own placeholders.
AWKWARD = st.sampled_from(
    ['a"b\\c', "é ü ع", "\x00r\x00", "\x001\x00", "tab\there", "", "\u2028", "plain"]
)
VALUES = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**20), 10**20)
    | st.sampled_from([0.1, -0.0, 1e-7, 1e22, True])
)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check(rows: list[dict[str, Any]]) -> None:
    expected = dumps(fhir.bundle("mmu-01", EPOCH, "b-1", rows, NOW))
    assert fhir_text.bundle_json("mmu-01", EPOCH, "b-1", rows, NOW) == expected


specs = st.lists(
    st.tuples(
        st.sampled_from(QUANTITIES),
        VALUES,
        st.lists(st.sampled_from(["alert", "implausible", "preliminary", "alert"]), max_size=3),
        st.none()
        | st.sampled_from(
            [
                "2026-11-23T08:00:00",
                "2026-11-23T08:00:00+01:00",
                "2026-11-23T08:00:00Z",
                "not a time",
            ]
        ),
        st.sampled_from(STATUSES),
        st.booleans(),
        st.booleans(),
        st.sampled_from(["system", "gps", "untrusted"]),
        AWKWARD,
        AWKWARD,
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(specs, st.sampled_from([None, "0", "90"]))
def test_the_template_text_is_the_bundle_json_dumps_writes(
    specs: list[Any], offset: str | None
) -> None:
    rows = []
    for i, (
        quantity,
        value,
        flags,
        device_time,
        status,
        patient,
        amended,
        clock,
        text,
        device,
        sourced,
    ) in enumerate(specs):
        context = [["result-status", status]] if status else []
        if offset is not None:
            context.append([fhir.CONTEXT_CLOCK_OFFSET, offset])
        rows.append(
            row(
                i + 1,
                quantity,
                value,
                id=f"r{i % 7}-{text}",
                flags=json.dumps(flags),
                device_time=device_time,
                device_id=f"dev-{device}-{i % 2}",
                context=json.dumps(context),
                encounter_id=ENCOUNTER if patient else None,
                encounter=ENCOUNTER_INFO if patient else None,
                attributed_at="2026-11-23T08:05:00.000Z" if amended and patient else None,
                source_key=f"hl7:{text}|{i}" if sourced else None,
                clock_source=clock,
                received_at=f"2026-11-23T08:00:0{i % 10}.000Z",
                **({"unit": f"u{text}"} if i % 3 == 1 else {}),
            )
        )  # a unit is part of a shape
    check(rows)


def test_every_shape_is_written_as_before() -> None:
    golden = GOLDEN.read_text(encoding="utf-8").rstrip("\n")
    rows = golden_rows()
    assert dumps(fhir.bundle("mmu-01", EPOCH, "b-golden", rows, NOW)) == golden
    assert fhir_text.bundle_json("mmu-01", EPOCH, "b-golden", rows, NOW) == golden
    payload = codec.encode_batch("mmu-01", "b-golden", rows, NOW, epoch=EPOCH)
    assert codec._inflate(payload).decode() == golden


def test_a_batch_of_one_shape_shares_one_template_and_keeps_each_reading() -> None:
    rows = [row(i, "spo2", 90.0 + i / 7, id=f"id-{i}") for i in range(1, 300)]
    text = fhir_text.bundle_json("mmu-01", EPOCH, "b-1", rows, NOW)
    assert text == dumps(fhir.bundle("mmu-01", EPOCH, "b-1", rows, NOW))
    values = [
        e["resource"]["valueQuantity"]["value"]
        for e in json.loads(text)["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    assert values == [90.0 + i / 7 for i in range(1, 300)]


def test_leaves_are_written_as_json_dumps_writes_them() -> None:
    for value in (
        97.0,
        0.1,
        -0.0,
        1e22,
        1e-7,
        3,
        10**30,
        math.nan,
        math.inf,
        -math.inf,
        True,
        None,
        'x"y',
        "é\u2028",
    ):
        assert fhir_text.token(value) == dumps([value])[1:-1], value
