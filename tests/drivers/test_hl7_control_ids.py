"""ACK control ids (MSH-10) are unique across connections and agent restarts (issue 20).

The production path: ``edge-agent run --only acquire`` as its own process, with an
``hl7-mllp`` device listening on TCP (the registry builds the decoder of each connection),
and python-hl7's MLLP client as the monitor: several connections, more than one message on
some, then the agent is stopped and started again and the monitor goes on. On the code before
the fix every connection's decoder started again at ``EA1``: 14 ACKs over 12 connections
carried 3 ids.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
from hl7.client import MLLPClient

from drivers.protocols.hl7v2 import parse_message
from drivers.transports.hl7_control_ids import PROCESS_PREFIX, base36, next_control_id

DEADLINE = 60.0  # seconds, for the agent to listen or to stop (bounded, never a speed check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp: Path, port: int) -> Path:
    path = tmp / "unit.toml"
    path.write_text(
        f'[unit]\nid = "mmu-acks"\n[store]\npath = "{tmp / "unit.db"}"\n'
        '[broker]\nhost = "127.0.0.1"\nport = 1\ntls = false\n'
        "[console]\nenabled = false\n"
        f'[[devices]]\nid = "monitor-1"\nkind = "hl7-mllp"\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def agent(cfg: Path, port: int, log: Path) -> Iterator[None]:
    """The agent running (acquisition only) until the block ends; then stopped (SIGTERM)."""
    with log.open("ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg), "--only", "acquire"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "the agent did not listen"
            time.sleep(0.05)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def oru(control_id: str) -> str:
    return (
        "\r".join(
            [
                "MSH|^~\\&|MON|WARD|EDGE|VAN|20240611093512+0100||ORU^R01^ORU_R01|"
                f"{control_id}|P|2.6",
                "OBR|1|||X|||20240611093500+0100",
                "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||F",
            ]
        )
        + "\r"
    )


def send(port: int, control_ids: list[str]) -> list[tuple[str, str, str]]:
    """One connection of python-hl7's MLLP client sending these messages in turn; (MSA-1,
    MSA-2, MSH-10) of each ACK."""
    out = []
    with MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(DEADLINE)
        for control_id in control_ids:
            data = client.send_message(oru(control_id))
            while not data.endswith(b"\x1c\r"):  # the ACK in more than one read
                chunk = client.socket.recv(4096)
                assert chunk, "the agent closed the connection"
                data += chunk
            ack = hl7.parse(data.strip(b"\x0b\x1c\r").decode())
            assert str(ack.segment("MSH")[9]) == "ACK^R01^ACK"
            msa = ack.segment("MSA")
            out.append((str(msa[1]), str(msa[2]), str(ack.segment("MSH")[10])))
    return out


def test_ack_control_ids_are_unique_across_connections_and_agent_restarts(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = config(tmp_path, port)
    log = tmp_path / "agent.log"
    plan = [["1", "2"], ["3"], ["4"], ["5"], ["6"], ["7"]]  # 6 connections, 7 messages
    acks = []
    for run in "AB":  # the agent, then the agent restarted
        with agent(cfg, port, log):
            for batch in plan:
                acks += send(port, [run + c for c in batch])
    # 14 ACKs over 12 connections, 2 agent processes: each answers its message positively
    assert [(code, answered) for code, answered, _ in acks] == [
        ("AA", run + c) for run in "AB" for batch in plan for c in batch
    ]
    ids = [control for _, _, control in acks]
    assert len(set(ids)) == len(ids), ids
    assert all(len(i) <= 20 for i in ids)  # HL7 ST, MSH-10: 20 characters up to v2.6


def test_control_ids_of_one_process_share_a_prefix_and_count_up() -> None:
    first, second = next_control_id(), next_control_id()
    assert first.startswith(PROCESS_PREFIX) and second.startswith(PROCESS_PREFIX)
    assert first != second
    assert [base36(n) for n in (0, 35, 36, 36**4 - 1)] == ["0", "Z", "10", "ZZZZ"]
    assert parse_message(oru(first).encode()).control_id == first  # plain ST: no escapes
