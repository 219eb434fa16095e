"""``edge-agent ports``: the serial ports present, with what identifies them (USB VID:PID,
serial number, the stable /dev/serial/by-id path) and the device kinds that match."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.service.unit_files import usb_matches


@dataclass(frozen=True)
class Port:
    device: str
    description: str
    vid_pid: str | None
    serial_number: str | None
    by_id: str | None
    kinds: tuple[str, ...]  # device kinds whose VID:PID matches ("serial": a generic bridge)
    used_by: str | None = None  # configured device using this port

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kinds_for(vid_pid: str | None) -> tuple[str, ...]:
    if vid_pid is None:
        return ()
    return tuple(m.name for m in usb_matches() if m.vid_pid == vid_pid.lower())


def by_id_links(by_id_dir: Path = Path("/dev/serial/by-id")) -> dict[str, str]:
    """Real device path -> its by-id link."""
    links: dict[str, str] = {}
    if by_id_dir.is_dir():
        for link in sorted(by_id_dir.iterdir()):
            links[str(link.resolve())] = str(link)
    return links


def list_ports(configured: dict[str, str] | None = None) -> list[Port]:
    """``configured``: port path (as written in the config) -> device id."""
    from serial.tools import list_ports as lp

    links = by_id_links()
    used = {str(Path(p).resolve()): dev for p, dev in (configured or {}).items()}
    ports = []
    for info in sorted(lp.comports(), key=lambda i: i.device):
        vid_pid = (
            f"{info.vid:04x}:{info.pid:04x}"
            if info.vid is not None and info.pid is not None
            else None
        )
        real = str(Path(info.device).resolve())
        ports.append(
            Port(
                info.device,
                info.description or "",
                vid_pid,
                info.serial_number,
                links.get(real),
                kinds_for(vid_pid),
                used.get(real),
            )
        )
    return ports
