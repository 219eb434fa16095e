"""``scripts/bench [FIGURE ...] [--json] [--quick]``: measure, print a table or one JSON object.

Exit codes: 0 every figure measured (targets met or not), 1 a figure could not be measured,
2 usage, 130 interrupted. Everything a figure starts is stopped when it ends, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from scripts.benchmarks import (
    central,
    drain,
    footprint,
    history,
    ingest,
    latency,
    profile,
    report,
    scale,
    slowlink,
    storm,
    wire,
)
from scripts.benchmarks.env import Bench, Interrupt, Size

Figure = Callable[[Bench, Size], Awaitable[dict[str, Any]]]
FIGURES: dict[str, Figure] = {
    "drain": drain.measure,
    "ingest": ingest.measure,
    "latency": latency.measure,
    "wire": wire.measure,
    "footprint": footprint.measure,
    "slowlink": slowlink.measure,
    "scale": scale.measure,
    "history": history.measure,
    "help": footprint.help_overhead,  # footprint's cheap part alone
    "profile": profile.measure,  # cProfile of the agent's drain
    "central": central.measure,  # one drain into SQLite and PostgreSQL centrals
    "storm": storm.measure,  # 50 units x 20k readings at once, two receivers, PostgreSQL
}
DEFAULT = (
    "drain",
    "ingest",
    "latency",
    "wire",
    "footprint",
    "slowlink",
    "scale",
    "history",
    "central",
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Sync throughput and footprint, each figure beside its baseline measured "
        "in the same run on a throwaway store, a real Mosquitto and the real receiver.",
        epilog=f"Figures: {', '.join(FIGURES)}. Default: {' '.join(DEFAULT)}.",
    )
    parser.add_argument("figures", nargs="*", metavar="FIGURE", help="figures to measure")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes everywhere")
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="size factor (1 = the issue's sizes; --quick = 0.1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folders")
    parser.add_argument("-v", "--verbose", action="store_true", help="the agent's log lines")
    args = parser.parse_args(argv)
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    if args.scale is not None and not 0 < args.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    return args


async def run(
    names: list[str], size: Size, keep: bool, progress: Callable[[str], None], interrupt: Interrupt
) -> tuple[dict[str, Any], dict[str, str]]:
    interrupt.watch()
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        if interrupt.signum is not None:
            break
        progress(f"bench: {name} ...")
        start = time.monotonic()
        # a fresh broker and receivers for each figure
        with Bench(keep=keep, progress=progress) as bench:
            try:
                figures[name] = await FIGURES[name](bench, size)
            except Exception as exc:  # one figure failing does not lose the others
                errors[name] = f"{type(exc).__name__}: {exc}"
        progress(f"bench: {name} done in {time.monotonic() - start:.0f} s")
    return figures, errors


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    size = Size(args.scale if args.scale is not None else 0.1 if args.quick else 1.0)
    names = args.figures or list(DEFAULT)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.monotonic()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    interrupt = Interrupt()
    with interrupt.installed():
        try:
            figures, errors = asyncio.run(run(names, size, args.keep, progress, interrupt))
        except (KeyboardInterrupt, asyncio.CancelledError):
            if interrupt.signum is None:
                raise
    if interrupt.signum is not None:
        progress("bench: interrupted; everything it started is stopped")
        return 130
    machine = {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}
    result: dict[str, Any] = {
        "bench": "edge-agent",
        "schema": 1,
        "started_at": started,
        "scale": size.scale,
        "quick": size.scale < 1,
        "machine": machine,
        "seconds": round(time.monotonic() - start, 1),
        "figures": figures,
        "targets": report.verdicts(figures),
        "errors": errors,
    }
    if args.json:
        print(report.as_json(result))
    else:
        print(report.table(figures, errors))
        if "profile" in figures:
            print("\n" + str(figures["profile"]["text"]))
        print(
            f"\n{machine['cpus']} CPUs, load {machine['loadavg_1m']} (1 min) at the end; "
            f"scale {size.scale:g}; {result['seconds']} s"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
