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
        report["check"] != "damaged" and not report["quarantined"] and not recovered and not full
    )
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"store: {report['store']}"]
    check = report["check"]
    lines.append(f"check:                 {check}" + (
        " (stopped at its time limit; run again when the unit is idle)"
        if check == "incomplete" else ""))
    for problem in report["problems"][:5]:
        lines.append(f"  problem: {problem.splitlines()[-1][:160]}")
    if check == "damaged":
        lines.append("  fix: restart the agent: it moves the damaged file aside and carries on "
                     "with what is readable")
    health = report.get("health") or {}
    if health.get("state") == "recovered":
        salvaged = health.get("salvaged", {})
        lines.append(f"recovered:             {health.get('at', '?')} from a damaged store")
        lines.append(f"  readings salvaged:   {salvaged.get('readings', 0)}")
        lines.append(f"  readings lost (estimate): {health.get('readings_lost_estimate', 0)}")
    for q in report["quarantined"]:
        lines.append(f"quarantined:           {q}")
    if report["quarantined"]:
        lines.append("  fix: copy the quarantined file(s) off the unit for analysis, then delete "
                     "them here")
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
            lines.append(f"  readings in memory:  {disk.get('buffered', 0)} "
                         f"(limit {disk.get('buffer_limit', '?')})")
            lines.append(f"  readings not kept:   {disk.get('dropped', 0)}")
            lines.append("  fix: free space on the store's disk (delete exported files); "
                         "held readings are written as soon as there is room")
    lines.append("healthy:               " + ("yes" if report["healthy"] else "no"))
    return "\n".join(lines)
