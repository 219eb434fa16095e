"""Weighing-scale simulator: line encoders (inverse of ``drivers.protocols.scale``) and a
platform people step on, settle on and step off."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

UNITS = {"kg": "kg", "g": "g", "[lb_av]": "lb"}  # UCUM -> the unit the scale prints


def encode_indicator(
    weight: float, *, header: str = "ST", mode: str = "GS", unit: str = "kg", decimals: int = 2
) -> bytes:
    """``ST,GS,+  72.45kg\\r\\n``: sign and a 7-character value (wider if it does not fit)."""
    value = f"{abs(weight):.{decimals}f}".rjust(7)
    sign = "-" if weight < 0 else "+"
    return f"{header},{mode},{sign}{value}{unit}\r\n".encode("ascii")


def encode_balance(
    weight: float, *, header: str = "ST", unit: str = "g", decimals: int = 2
) -> bytes:
    """A&D ``ST,+00123.45  g\\r\\n``: sign, 8 characters zero-padded, 3-character unit."""
    sign = "-" if weight < 0 else "+"
    return f"{header},{sign}{abs(weight):0{8}.{decimals}f}{unit:>3}\r\n".encode("ascii")


def encode_overload(grammar: str = "indicator") -> bytes:
    return b"OL,GS,+9999999kg\r\n" if grammar == "indicator" else b"OL,+1E19     g\r\n"


@dataclass
class ScaleModel:
    """A column scale's indicator at 10 Hz: empty platform (zero), a person stepping on
    (unstable, swaying), standing still (stable, 2-3 s), stepping off (unstable), again.
    ``weights`` lists each person's stable weight (kg), appended as they step on."""

    seed: int = 0
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._plan: list[bytes] = []

    @property
    def interval(self) -> float:
        return 0.1

    def receive(self, data: bytes) -> None:
        pass  # print/zero commands are not simulated

    def _person(self) -> list[bytes]:
        rng = self._rng
        weight = round(rng.uniform(3.0, 120.0) * 20) / 20  # 0.05 kg divisions
        self.weights.append(weight)
        empty = [encode_indicator(0.0)] * rng.randint(5, 15)
        stepping = [
            encode_indicator(weight * rng.uniform(0.6, 1.1), header="US")
            for _ in range(rng.randint(5, 12))
        ]
        still = [encode_indicator(weight)] * rng.randint(20, 30)
        leaving = [encode_indicator(weight * rng.uniform(0.1, 0.6), header="US")] * 3
        return empty + stepping + still + leaving

    def output(self) -> bytes:
        if not self._plan:
            self._plan = self._person()
        return self._plan.pop(0)
