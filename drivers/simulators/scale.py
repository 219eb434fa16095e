"""Weighing-scale simulator: line encoders (inverse of ``drivers.protocols.scale``) and a
platform on which people step on, settle, and step off."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def encode_indicator(weight: float, *, stable: bool = True, net: bool = False,
                     unit: str = "kg", decimals: int = 2) -> bytes:
    value = f"{abs(weight):.{decimals}f}".rjust(7)
    sign = "-" if weight < 0 else "+"
    return f"{'ST' if stable else 'US'},{'NT' if net else 'GS'},{sign}{value}{unit}\r\n".encode()


def encode_balance(weight: float, *, stable: bool = True, unit: str = "g") -> bytes:
    sign = "-" if weight < 0 else "+"
    return f"{'ST' if stable else 'US'},{sign}{abs(weight):08.2f} {unit:>2}\r\n".encode()


def encode_overload() -> bytes:
    return b"OL,GS,+9999999kg\r\n"


@dataclass
class ScaleModel:
    """10 Hz indicator stream; ``weights`` lists each stable weight a person produced."""

    seed: int = 0
    interval: float = 0.1
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._plan: list[bytes] = []

    def receive(self, data: bytes) -> None:
        pass

    def _person(self) -> list[bytes]:
        weight = round(self._rng.uniform(3.0, 110.0), 2)
        self.weights.append(weight)
        settling = [encode_indicator(weight + self._rng.uniform(-3, 3), stable=False)
                    for _ in range(8)]
        stable = [encode_indicator(weight)] * 15
        off = [encode_indicator(0.0)] * 10
        return settling + stable + off

    def output(self) -> bytes:
        if not self._plan:
            self._plan = self._person()
        return self._plan.pop(0)
