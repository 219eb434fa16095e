"""``edge-agent db check``: one report of the store's health (damage, recovery, full disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.store.disk_status import read_status
from edge_agent.store.recovery import check_report


def health_report(path: Path) -> dict[str, Any]:
    report = check_report(path)
    disk = read_status(path)
    report["disk"] = disk
    recovered = (report.get("health") or {}).get("state") == "recovered"
    full = bool(disk and disk.get("agent_running") and disk.get("disk") == "full")
    report["healthy"] = (
        report["check"] not in ("damaged", "salvage-pending")
        and not report["quarantined"]
        and not recovered
        and not full
    )
    return report


def summary(report: dict[str, Any]) -> tuple[str, str]:
    """The store's state in one line for a technician, and the fix ("" when healthy)."""
    name = report["store"]
    quarantine = report.get("quarantine") or []
    keep = [q for q in quarantine if not q.get("may_delete")]
    kept = ", ".join(Path(q["file"]).name for q in quarantine)
    advice = (
        (
            f"keep {', '.join(Path(q['file']).name for q in keep)} (it holds readings central "
            "does not have); copy it off the unit for support"
            if keep
            else f"central holds every reading in {kept}: copy it off if support wants it, then it "
            "may be deleted"
        )
        if quarantine
        else ""
    )
    if report["check"] == "salvage-pending":
        return (
            f"{name}: the salvage of a damaged store was interrupted (power cut?); its "
            f"readings are kept in {Path(report['salvage_pending']).name}",
            "start the agent (systemctl start edge-agent): it finishes the salvage before "
            "anything else",
        )
    if report["check"] == "damaged":
        problems = "; ".join(p.splitlines()[-1][:80] for p in report["problems"][:2] if p)
        return (
            f"{name}: damaged ({problems or 'quick_check failed'})",
            "restart the agent: it moves the damaged file aside and carries on with what "
            "is readable",
        )
    health = report.get("health") or {}
    if health.get("state") == "recovered":
        salvaged = (health.get("salvaged") or {}).get("readings", 0)
        resumed = ", finished after a power cut" if health.get("resumed") else ""
        return (
            f"recovered on {health.get('at', '?')} from a damaged store{resumed}: "
            f"{salvaged} readings salvaged, about {health.get('readings_lost_estimate', 0)} "
            f"lost; quarantine kept ({kept or 'none'})",
            "; ".join(x for x in ("see edge-agent db check", advice) if x),
        )
    if quarantine:
        return f"{name}: quick_check {report['check']}; quarantine kept ({kept})", advice
    disk = report.get("disk") or {}
    if not report["healthy"] and disk.get("disk") == "full":
        return f"{name}: the disk is full", "see edge-agent db check"
    return f"{name}: quick_check {report['check']}", ""


def render(report: dict[str, Any]) -> str:
    lines = [f"store: {report['store']}"]
    check = report["check"]
    lines.append(
        f"check:                 {check}"
        + (
            " (stopped at its time limit; run again when the unit is idle)"
            if check == "incomplete"
            else ""
        )
    )
    for problem in report["problems"][:5]:
        lines.append(f"  problem: {problem.splitlines()[-1][:160]}")
    if check == "damaged":
        lines.append(
            "  fix: restart the agent: it moves the damaged file aside and carries on "
            "with what is readable"
        )
    if check == "salvage-pending":
        lines.append(
            f"  a salvage was interrupted (power cut?); the readings are kept in "
            f"{report['salvage_pending']}"
        )
        lines.append("  fix: start the agent: it finishes the salvage before anything else")
    health = report.get("health") or {}
    if health.get("state") == "recovered":
        salvaged = health.get("salvaged", {})
        lines.append(f"recovered:             {health.get('at', '?')} from a damaged store")
        lines.append(f"  readings salvaged:   {salvaged.get('readings', 0)}")
        lines.append(f"  readings lost (estimate): {health.get('readings_lost_estimate', 0)}")
        if health.get("resumed"):
            lines.append("  interrupted (power cut?) and finished at the next start")
    for q in report.get("quarantine") or []:
        lines.append(f"quarantined:           {q['file']}")
        if q["readable"]:
            lines.append(
                f"  readings in it:      {q['readings']}, central does not have "
                f"{q['not_at_central']}, unreadable (estimate) {q['unreadable']}"
            )
        lines.append(f"  fix: {q['advice']}")
    disk = report.get("disk")
    if disk is not None:
        state = disk.get("disk", "?")
        when = f" since {disk['since']}" if disk.get("since") else ""
        running = "" if disk.get("agent_running") else " (agent not running: last known)"
        lines.append(f"disk:                  {state}{when}{running}")
        for device, dstate in sorted((disk.get("devices") or {}).items()):
            if dstate in ("store-full", "buffer-full"):
                lines.append(f"  device {device}: {dstate}")
        if state == "full":
            lines.append(
                f"  readings in memory:  {disk.get('buffered', 0)} "
                f"(limit {disk.get('buffer_limit', '?')})"
            )
            lines.append(f"  readings not kept:   {disk.get('dropped', 0)}")
            lines.append(
                "  fix: free space on the store's disk (delete exported files); "
                "held readings are written as soon as there is room"
            )
    lines.append("healthy:               " + ("yes" if report["healthy"] else "no"))
    return "\n".join(lines)
