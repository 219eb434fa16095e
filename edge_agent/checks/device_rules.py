"""Is a configured device one the agent can run? Checked at config load and by the supervisor.

Against the one registry (:data:`drivers.registry.DRIVERS`): the kind exists, the fields its
transport needs are set (``port`` for serial, ``address`` for Bluetooth LE; an MLLP listener
defaults to 127.0.0.1:2575) and its ``options`` are ones its decoder accepts. Pure, except the
options that name files when ``read_files`` is set.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.registry import DRIVERS


class DeviceFields(Protocol):
    """What the rules read of a configured device (``edge_agent.settings.DeviceSettings``)."""

    @property
    def kind(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def port(self) -> Any: ...
    @property
    def listen(self) -> Any: ...
    @property
    def address(self) -> Any: ...
    @property
    def options(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DeviceProblem:
    field: str  # a field of the device table: "kind", "port", "options.grammar"
    problem: str
    fix: str


def _kind_fix(kind: str) -> str:
    near = difflib.get_close_matches(kind, DRIVERS, n=1)
    hint = f'did you mean "{near[0]}"? ' if near else ""
    return f"{hint}use one of: {', '.join(sorted(DRIVERS))} (samples in config/devices/)"


def device_problems(dev: DeviceFields, *, read_files: bool = True) -> list[DeviceProblem]:
    spec = DRIVERS.get(dev.kind)
    if spec is None:
        return [DeviceProblem("kind", f"unknown device kind {dev.kind!r}", _kind_fix(dev.kind))]
    problems: list[DeviceProblem] = []
    if dev.enabled:
        if spec.transport == "serial" and dev.port is None and dev.listen is None:
            problems.append(
                DeviceProblem(
                    "port",
                    f"a {dev.kind} device is read on a serial port and none is given",
                    'set port = "/dev/serial/by-id/..." (see ls /dev/serial/by-id), '
                    "or enabled = false",
                )
            )
        if spec.transport == "ble" and dev.address is None:
            problems.append(
                DeviceProblem(
                    "address",
                    f"a {dev.kind} device is Bluetooth LE and no address is given",
                    'set address = "AA:BB:CC:DD:EE:FF" as `edge-agent ble scan` shows it, '
                    "or enabled = false",
                )
            )
    checks = [spec.check_options]
    if read_files and spec.check_files is not None:
        checks.append(spec.check_files)
    for check in checks:
        found = check(dev.options)
        problems += [DeviceProblem(f"options.{p.key}", p.problem, p.fix) for p in found]
        if found:
            break  # a file check after a malformed option would only repeat it
    return problems
