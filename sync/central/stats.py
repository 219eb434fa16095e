"""What central holds, per unit and epoch, for an operator (``edge-agent receive --stats``):
readings held, last contiguous and highest seq (a gap is the difference; only the newest epoch
of a unit is asked to resend), conflicts refused, and messages parked in ``dead_letters``:
counted per unit and epoch, and the latest listed one by one (never their payload; a store
error's reason shows its class only, as its message may quote the data)."""

from __future__ import annotations

from typing import Any

from sync.central.store import CentralStore

EPOCHS = (
    "SELECT e.unit, e.epoch, e.last_contiguous_seq, e.max_seq, e.first_seen, e.last_seen, "
    "(SELECT count(*) FROM sequences s WHERE s.unit = e.unit AND s.epoch = e.epoch) "
    "FROM epochs e ORDER BY e.unit, e.first_seen, e.epoch"
)
CONFLICTS = "SELECT unit, epoch, count(*), sum(times) FROM conflicts GROUP BY unit, epoch"
DEAD = "SELECT unit, epoch, count(*) FROM dead_letters GROUP BY unit, epoch"
LISTED = 100  # dead letters listed, newest first
DEAD_LIST = (
    "SELECT id, received_at, topic, unit, epoch, batch_id, length(payload), reason "
    f"FROM dead_letters ORDER BY id DESC LIMIT {LISTED}"
)
STORE_ERROR = "central-store-error"


def shown_reason(reason: str) -> str:
    """``codec: ...`` whole; ``central-store-error: Class: message`` as its class only."""
    if reason.startswith(STORE_ERROR):
        return ": ".join(reason.split(": ", 2)[:2])
    return reason[:200]


def dead_letters(store: CentralStore) -> list[dict[str, Any]]:
    return [
        {
            "id": int(i),
            "received_at": at,
            "topic": topic,
            "unit": unit,
            "epoch": epoch,
            "batch_id": batch,
            "bytes": int(size),
            "reason": shown_reason(str(reason)),
        }
        for i, at, topic, unit, epoch, batch, size, reason in store.query(DEAD_LIST)
    ]


def central_stats(store: CentralStore) -> dict[str, Any]:
    conflicts = {(u, e): (int(n), int(t)) for u, e, n, t in store.query(CONFLICTS)}
    dead = {(u, e): int(n) for u, e, n in store.query(DEAD)}
    current = {(g.unit, g.epoch) for g in store.gaps() if g.current}
    units: dict[str, list[dict[str, Any]]] = {}
    for unit, epoch, last, top, first, seen, held in store.query(EPOCHS):
        n, times = conflicts.pop((unit, epoch), (0, 0))
        units.setdefault(unit, []).append(
            {
                "epoch": epoch,
                "held": int(held),
                "last_contiguous_seq": int(last),
                "max_seq": int(top),
                "gap": int(top) > int(last),
                "gap_asked_for": (unit, epoch) in current,
                "first_seen": first,
                "last_seen": seen,
                "conflicts": n,
                "conflicts_seen": times,
                "dead_letters": dead.pop((unit, epoch), 0),
            }
        )
    # Dead letters of no known epoch: not a batch at all, or a batch whose epoch never stored.
    unplaced = [
        {"unit": u, "epoch": e, "dead_letters": n}
        for (u, e), n in sorted(dead.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
    ]
    return {
        "units": units,
        "unplaced_dead_letters": unplaced,
        "dead_letters": dead_letters(store),
        "totals": {
            "held": sum(x["held"] for v in units.values() for x in v),
            "conflicts": sum(n for n, _ in conflicts.values())
            + sum(x["conflicts"] for v in units.values() for x in v),
            "dead_letters": sum(n for *_, n in store.query("SELECT 1, count(*) FROM dead_letters")),
        },
    }
