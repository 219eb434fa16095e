"""The wire format: round trip, strict refusal of anything else, and its size."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import tomllib
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import codec

ROOT = Path(__file__).resolve().parents[2]
EPOCH = "5f0c2b1e-8d3a-4c1b-9f2e-0a1b2c3d4e5f"
QUANTITIES = [
    ("spo2", "%", "59408-5", 150456),
    ("pulse_rate", "/min", "8867-4", 149530),
    ("glucose", "mg/dL", "41653-7", 160184),
    ("latitude", "deg", None, None),
]

row_strategy = st.builds(
    lambda q, value, flags, device_time, pos: {
        "id": str(uuid.uuid4()),
        "device_id": "ox-1",
        "quantity": q[0],
        "value": value,
        "unit": q[1],
        "loinc": q[2],
        "mdc": q[3],
        "device_time": device_time,
        "received_at": "2026-11-23T08:00:00.000Z",
        "clock_source": "system",
        "flags": json.dumps(flags),
        "absent_reason": None if value is not None else "error",
        "encounter_id": None,
        "latitude": pos[0] if pos else None,
        "longitude": pos[1] if pos else None,
    },
    st.sampled_from(QUANTITIES),
    st.none() | st.floats(-1e6, 1e6, allow_nan=False),
    st.lists(st.sampled_from(["alert", "implausible", "artifact"]), unique=True, max_size=2),
    st.none() | st.sampled_from(["2026-11-23T08:00:00", "2026-11-23T08:00:00+01:00"]),
    st.none() | st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
)


def numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "seq": i + 1} for i, r in enumerate(rows)]


@given(st.lists(row_strategy, min_size=1, max_size=30))
def test_round_trip_keeps_every_reading(rows: list[dict[str, Any]]) -> None:
    rows = numbered(rows)
    batch = codec.decode_batch(
        codec.encode_batch("mmu-01", "b-1", rows, "2026-11-23T08:00:00Z", epoch=EPOCH)
    )
    assert (batch.unit, batch.epoch, batch.batch_id, batch.seq_from, batch.seq_to) == (
        "mmu-01",
        EPOCH,
        "b-1",
        1,
        len(rows),
    )
    assert [(r.id, r.seq) for r in batch.readings] == [(r["id"], r["seq"]) for r in rows]
    for row, carried in zip(rows, batch.readings, strict=True):
        obs = carried.resource
        if row["quantity"] == "latitude":
            assert obs["resourceType"] == "Location"
            assert obs.get("position") is None  # half a fix: no position
            continue
        if row["value"] is None:
            assert "valueQuantity" not in obs and obs["dataAbsentReason"]
        else:
            assert obs["valueQuantity"] == {
                "value": row["value"],
                "unit": row["unit"],
                "system": codec.UCUM,
                "code": row["unit"],
            }
        if row["device_time"] is None:
            assert obs["effectiveDateTime"] == row["received_at"]
        elif row["device_time"].endswith("+01:00"):
            assert obs["effectiveDateTime"] == row["device_time"]
        else:  # no zone: the unit's zone (Africa/Casablanca: +01:00 on this date)
            assert obs["effectiveDateTime"] == row["device_time"] + "+01:00"


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_batch_or_a_codec_error(data: bytes) -> None:
    with contextlib.suppress(codec.CodecError):
        codec.decode_batch(data)


def test_a_decompression_bomb_is_refused() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, codec.ZDICT_V1)
    payload = bomb.compress(b"[" + b" " * (codec.MAX_DECOMPRESSED + 10)) + bomb.flush()
    assert len(payload) < 100_000
    with pytest.raises(codec.CodecError, match="decompressed size"):
        codec.decode_batch(payload)


@pytest.mark.parametrize(
    "envelope",
    [
        {"schema": "other/1"},
        {"schema": ["not", "a", "name"]},
        {
            "schema": codec.LEGACY_SCHEMA,
            "unit": "u",
            "batch_id": "b",
            "seq_from": 1,
            "seq_to": 1,
            "bundle": {"entry": []},
        },  # no epoch
        {
            "schema": codec.LEGACY_SCHEMA,
            "unit": "u",
            "epoch": "",
            "batch_id": "b",
            "seq_from": 1,
            "seq_to": 1,
            "bundle": {"entry": []},
        },
        {
            "schema": codec.LEGACY_SCHEMA,
            "unit": "u",
            "epoch": "a/b",
            "batch_id": "b",
            "seq_from": 1,
            "seq_to": 1,
            "bundle": {"entry": []},
        },
        {
            "schema": codec.LEGACY_SCHEMA,
            "unit": "u",
            "batch_id": "b",
            "seq_from": 3,
            "seq_to": 2,
            "bundle": {"entry": []},
        },
        {
            "schema": codec.LEGACY_SCHEMA,
            "unit": "u",
            "batch_id": "b",
            "seq_from": 1,
            "seq_to": 1,
            "bundle": {"entry": [{"resource": {"resourceType": "Patient"}}]},
        },
    ],
)
def test_malformed_envelopes_are_refused(envelope: dict[str, Any]) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, codec.ZDICT_V1)
    payload = packer.compress(json.dumps(envelope).encode()) + packer.flush()
    with pytest.raises(codec.CodecError):
        codec.decode_batch(payload)


def test_a_batch_costs_far_less_per_reading_than_one_observation_per_message() -> None:
    rows = numbered(
        [
            {
                "id": str(uuid.UUID(int=i)),
                "device_id": "ox-1",
                "quantity": "spo2",
                "value": 95 + i % 4,
                "unit": "%",
                "loinc": "59408-5",
                "mdc": 150456,
                "device_time": None,
                "received_at": f"2026-11-23T08:00:{i % 60:02d}.000Z",
                "clock_source": "system",
                "flags": "[]",
                "absent_reason": None,
                "encounter_id": None,
            }
            for i in range(100)
        ]
    )
    one_each = sum(len(json.dumps(codec.observation("mmu-01", r)).encode()) for r in rows)
    batched = len(codec.encode_batch("mmu-01", "b", rows, "2026-11-23T08:00:00Z", epoch=EPOCH))
    assert batched * 5 < one_each


def pack(obj: object) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, codec.ZDICT_V1)
    return packer.compress(json.dumps(obj).encode()) + packer.flush()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["Observation", "urn:mmu:seq:u", "7", "²"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["resource", "resourceType", "id", "identifier", "system", "value", "entry"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(unit=json_values, seq=json_values, entry=json_values)
def test_any_well_compressed_json_envelope_is_a_batch_or_a_codec_error(
    unit: object, seq: object, entry: object
) -> None:
    envelope = {
        "schema": codec.LEGACY_SCHEMA,
        "unit": unit,
        "epoch": EPOCH,
        "batch_id": "b",
        "seq_from": seq,
        "seq_to": seq,
        "bundle": {"entry": entry},
    }
    with contextlib.suppress(codec.CodecError):
        codec.decode_batch(pack(envelope))


def test_deeply_nested_json_is_a_codec_error() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, codec.ZDICT_V1)
    payload = packer.compress(b"[" * 200_000) + packer.flush()
    with pytest.raises(codec.CodecError):
        codec.decode_batch(payload)


def test_a_unicode_digit_seq_is_a_codec_error() -> None:
    obs = {
        "resourceType": "Observation",
        "id": "r1",
        "identifier": [{"system": "urn:mmu:seq:u", "value": "²"}],
    }
    with pytest.raises(codec.CodecError):
        codec.decode_batch(
            pack(
                {
                    "schema": codec.LEGACY_SCHEMA,
                    "unit": "u",
                    "epoch": EPOCH,
                    "batch_id": "b",
                    "seq_from": 1,
                    "seq_to": 1,
                    "bundle": {"entry": [{"resource": obs}]},
                }
            )
        )


def test_a_batch_without_a_store_epoch_is_refused_with_the_reason() -> None:
    """mmu.readings/1 carried no epoch: central cannot place its seqs (issue 13)."""
    obs = {
        "resourceType": "Observation",
        "id": "r1",
        "identifier": [{"system": "urn:mmu:seq:u", "value": "1"}],
    }
    old = {
        "schema": "mmu.readings/1",
        "unit": "u",
        "batch_id": "b",
        "seq_from": 1,
        "seq_to": 1,
        "bundle": {"entry": [{"resource": obs}]},
    }
    with pytest.raises(codec.CodecError, match=r"mmu.readings/1 is retired .* mmu.readings/3"):
        codec.decode_batch(pack(old))
    with pytest.raises(ValueError, match="epoch"):
        codec.encode_batch("u", "b", [{"seq": 1}], "", epoch="")
    assert codec.SCHEMA == "mmu.readings/3"


def test_a_unit_not_yet_updated_still_syncs_with_mmu_readings_2() -> None:
    """A mmu.readings/2 envelope (dictionary V1, named by its zlib DICTID) still decodes."""
    obs = [
        {
            "resourceType": "Observation",
            "id": f"r{i}",
            "identifier": [{"system": "urn:mmu:seq:u", "value": str(i)}],
        }
        for i in (1, 2)
    ]
    old = {
        "schema": "mmu.readings/2",
        "unit": "u",
        "epoch": EPOCH,
        "batch_id": "b",
        "seq_from": 1,
        "seq_to": 2,
        "bundle": {"entry": [{"resource": o} for o in obs]},
    }
    batch = codec.decode_batch(pack(old))
    assert [(r.id, r.seq) for r in batch.readings] == [("r1", 1), ("r2", 2)]
    assert codec.dictionary_of(pack(old)) == codec.ZDICT_V1


# Every preset dictionary a unit ever sent with, as shipped (sync/dictionaries/*.zdict): a
# payload's zlib header names its dictionary by Adler-32, so one byte changed in a file (an
# editor's final newline) and every batch compressed with that version no longer decodes.
SHIPPED_DICTIONARIES = {
    "mmu-zdict-1": (
        1298,
        0x1AB4A486,
        "211c30c65ecc2e412eea089b6c75a74ba2a82a4925fff7f6d705b532e39654be",
    ),
    "mmu-zdict-2": (
        9293,
        0x0EE90791,
        "cecceaec90edf4ebe2dfce9cd3518d19f25cf70a57fceae17bda090b42b217ee",
    ),
    "mmu-zdict-3": (
        9972,
        0x87AE3B6A,
        "c66cc80f896742c044f15f5a6afacf8eb4644352326cf2a7328a27fbe132da70",
    ),
}


def test_the_shipped_dictionaries_are_the_bytes_units_compressed_with() -> None:
    by_name = {
        "mmu-zdict-1": codec.ZDICT_V1,
        "mmu-zdict-2": codec.ZDICT_V2,
        "mmu-zdict-3": codec.ZDICT_V3,
    }
    for name, (size, adler, sha256) in SHIPPED_DICTIONARIES.items():
        data = by_name[name]
        assert (len(data), zlib.adler32(data), hashlib.sha256(data).hexdigest()) == (
            size,
            adler,
            sha256,
        ), name
        assert codec.DICTIONARIES[adler] == data
    assert codec.ZDICT == codec.ZDICT_V3
    assert len(codec.DICTIONARIES) == len(SHIPPED_DICTIONARIES)


def test_the_dictionary_files_are_package_data() -> None:
    """An installed unit (a wheel, not this checkout) has the files the codec reads."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["sync"]
    files = sorted((ROOT / "sync" / "dictionaries").glob("*.zdict"))
    assert [f.stem for f in files] == sorted(SHIPPED_DICTIONARIES)
    for f in files:
        assert any(fnmatch.fnmatch(f"dictionaries/{f.name}", g) for g in globs), f.name
