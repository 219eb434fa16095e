"""Bytes per reading on the wire, by batch size, against one uncompressed FHIR Observation per
MQTT message (the baseline), measured in the same run. Counts the MQTT 5 PUBLISH packet: fixed
header, topic, packet id, properties (content type + user properties) and payload."""

from __future__ import annotations

import argparse
import json
import random
import uuid

from sync import codec, topics

UNIT = "mmu-01"
TOPIC = topics.READINGS.of(UNIT)


def rows(n: int, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    quantities = [("spo2", "%", "59408-5", 150456, 97),
                  ("pulse_rate", "/min", "8867-4", 149530, 72),
                  ("systolic_bp", "mm[Hg]", "8480-6", 150021, 125),
                  ("body_temperature", "Cel", "8310-5", 150364, 37)]
    out = []
    for seq in range(1, n + 1):
        q, unit, loinc, mdc, base = quantities[seq % len(quantities)]
        out.append({
            "seq": seq, "id": str(uuid.UUID(int=rng.getrandbits(128))), "device_id": "oximeter-1",
            "quantity": q, "value": base + rng.randint(-3, 3), "unit": unit, "loinc": loinc,
            "mdc": mdc, "device_time": None, "received_at": f"2026-11-23T08:{seq // 60 % 60:02d}:"
            f"{seq % 60:02d}.{rng.randint(0, 999):03d}Z", "clock_source": "system", "flags": "[]",
            "absent_reason": None, "encounter_id": None, "latitude": 31.9616, "longitude": -6.5718,
        })
    return out


def mqtt_overhead(payload_len: int, props_len: int) -> int:
    """PUBLISH bytes other than the payload: fixed header, topic, packet id, properties."""
    variable = 2 + len(TOPIC) + 2 + props_len + 1
    remaining = variable + payload_len
    length_bytes = next(n for n, top in ((1, 128), (2, 16384), (3, 2**21), (4, 2**28))
                        if remaining < top)
    return 1 + length_bytes + variable


def props_len(user: list[tuple[str, str]]) -> int:
    size = 1 + 2 + len(codec.CONTENT_TYPE)
    return size + sum(1 + 4 + len(k) + len(v) for k, v in user)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sample = rows(500)
    baseline_total = 0
    for row in sample:
        payload = json.dumps(codec.observation(UNIT, row), separators=(",", ":")).encode()
        baseline_total += mqtt_overhead(len(payload), props_len([])) + len(payload)
    baseline = baseline_total / len(sample)
    result: dict[str, object] = {"baseline_bytes_per_reading": round(baseline, 1)}
    for size in (1, 10, 100, 500):
        total = 0
        for start in range(0, len(sample), size):
            batch = sample[start : start + size]
            payload = codec.encode_batch(UNIT, str(uuid.uuid4()), batch, "2026-11-23T08:00:00Z",
                                         epoch=str(uuid.UUID(int=1)))
            user = [("schema", codec.SCHEMA), ("encoding", codec.ENCODING)]
            total += mqtt_overhead(len(payload), props_len(user)) + len(payload)
        per = total / len(sample)
        result[f"batch_{size}_bytes_per_reading"] = round(per, 1)
        result[f"batch_{size}_ratio_to_baseline"] = round(per / baseline, 3)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
