"""Store benchmark: group commit vs one transaction per reading, measured in the same run.

Both use the same file settings (WAL, synchronous=FULL); the baseline commits each reading
alone (what a naive driver loop would do). Prints readings/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.store import Store


def run(n: int, group_max: int, concurrent: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp, Store(
        Path(tmp) / "bench.db", "bench", group_max=group_max, group_wait=0.005
    ) as store:
        m = [measurement("spo2", 97.0, raw=b"\x01" * 125)]
        start = time.perf_counter()
        if concurrent:  # producers do not wait for each other: the writer groups them
            futures: list[Future[list[int]]] = [store.append("ox", m) for _ in range(n)]
            for f in futures:
                f.result()
        else:  # each reading waits for its own commit
            for _ in range(n):
                store.append("ox", m).result()
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    baseline = run(args.n, group_max=1, concurrent=False)
    grouped = run(args.n, group_max=500, concurrent=True)
    result = {
        "readings": args.n,
        "baseline_one_commit_per_reading_per_s": round(baseline),
        "group_commit_per_s": round(grouped),
        "ratio": round(grouped / baseline, 1),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
