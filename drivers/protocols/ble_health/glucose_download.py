"""A glucose meter's stored records downloaded over RACP, resumable."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum

from drivers.base import (
    DecoderMisuse,
    DeviceInfo,
    Event,
    GattWrite,
    MessageComplete,
    Rejected,
    source_key,
)
from drivers.protocols.ble_health.common import (
    _Bad,
)
from drivers.protocols.ble_health.glucose import (
    _GlucoseContext,
    _GlucoseRecord,
    _parse_context,
    _parse_glucose,
)
from drivers.protocols.ble_health.racp import (
    RacpCount,
    RacpOp,
    decode_racp,
    racp_abort,
    racp_count_from,
    racp_report_all,
    racp_report_from,
)
from edge_agent.models import Measurement


class _Procedure(Enum):
    IDLE = "idle"
    REPORTING = "reporting"  # report request written, waiting for records and the response
    COUNTING = "counting"  # nothing new: asked how many records >= the cursor (reset check)
    ABORTING = "aborting"  # abort written, waiting for its response


class GlucoseDownload:
    """Download a glucose meter's stored records with the RACP, each once.

    ``resume(meter, cursor_key, last_seq)`` says which meter this is (its Device Information
    identity, read by the transport) and where its cursor is kept; ``start()`` then queues
    "report all records" (``last_seq`` None: first contact) or "report records with
    sequence >= last_seq + 1". Measurements (0x2A18) and contexts (0x2A34) are collected, a
    context joined to its measurement by sequence number (HbA1c becomes an ``hba1c`` reading at
    its measurement's time). The response indication ends the procedure: success or "no records
    found" (not an error) emits the collected events then ``MessageComplete`` carrying the new
    cursor ``(cursor_key, highest sequence number)``, which the runtime commits in the same
    transaction as the readings; any other response code emits ``DeviceInfo("racp", <name>)``
    and drops what was collected (the next download asks again from the same cursor).

    Reset or replaced meter: when nothing above the cursor came back, the download asks for the
    number of records >= ``last_seq``. None means the meter's highest record is below the
    cursor: its memory was cleared or its numbering restarted. It emits
    ``DeviceInfo("racp-reset", ...)``, downloads all records and the cursor moves to their
    highest number, even below the old one. (A meter whose numbering restarted and has passed the
    old cursor again before the next download cannot be told apart by sequence numbers; its
    records below the cursor are not asked for.)

    Source keys: ``gls:[meter, sequence, base time + offset as sent, characteristic]``: a
    record delivered again (filter ignored, cursor lost, download repeated) is stored once; the
    time keeps records of a reset meter that reuse old sequence numbers apart; the identity
    keeps two meters apart. Without ``meter`` (no ``resume``) readings have no source key.

    :attr:`last_seq` moves only when the runtime calls ``acknowledge(message_id, stored=True)``
    after the commit: a failed commit, a failed procedure or a disconnect downloads the same
    records again rather than skip any. Values outside a procedure are ignored (the meter keeps
    them; the next download gets them). Timing out a stalled procedure is the transport's job:
    it calls :meth:`abort`.
    """

    subscriptions: tuple[str, ...] = ("2a18", "2a34", "2a52")

    def __init__(
        self,
        last_seq: int | None = None,
        *,
        meter: str | None = None,
        cursor_key: str | None = None,
    ) -> None:
        self._state = _Procedure.IDLE
        self._writes: list[GattWrite] = []
        self._records: dict[int, _GlucoseRecord] = {}
        self._contexts: dict[int, _GlucoseContext] = {}
        self._unacknowledged: dict[str, int | None] = {}
        self._procedures = 0
        self._reset = False  # this procedure downloads everything after a detected reset
        self._last_seq: int | None = None
        self._meter: str | None = None
        self._cursor_key: str | None = None
        self.resume(meter, cursor_key, last_seq)

    def resume(self, meter: str | None, cursor_key: str | None, last_seq: int | None) -> None:
        """Before :meth:`start`: the meter's identity (for source keys), the key its cursor is
        committed under and the cursor's value (None: never downloaded)."""
        if self.active or self._unacknowledged:
            raise DecoderMisuse("resume() while a procedure is running or unacknowledged")
        if last_seq is not None and not 0 <= last_seq <= 0xFFFF:
            raise DecoderMisuse(f"a glucose sequence number is uint16, got {last_seq}")
        self._meter, self._cursor_key, self._last_seq = meter, cursor_key, last_seq

    @property
    def last_seq(self) -> int | None:
        """Highest sequence number committed (by this decoder's acknowledged downloads)."""
        return self._last_seq

    @property
    def active(self) -> bool:
        """A procedure is waiting for the meter (the transport times this out)."""
        return self._state is not _Procedure.IDLE

    def start(self) -> None:
        if self.active or self._unacknowledged:
            raise DecoderMisuse("start() while a procedure is running or unacknowledged")
        if self._last_seq is None:
            request = racp_report_all()
        else:
            # At 0xFFFF nothing newer is addressable; ">= 0xFFFF" returns only seen records.
            request = racp_report_from(min(self._last_seq + 1, 0xFFFF))
        self._writes.append(GattWrite("2a52", request))
        self._state = _Procedure.REPORTING
        self._reset = False

    def abort(self) -> None:
        """Queue the RACP abort (``03 00``) and drop what the procedure collected."""
        self._writes.append(GattWrite("2a52", racp_abort()))
        self._drop()
        self._state = _Procedure.ABORTING

    def writes_to_send(self) -> list[GattWrite]:
        out, self._writes = self._writes, []
        return out

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        data = bytes(value)
        if characteristic == "2a52":
            return self._racp(data)
        if characteristic not in ("2a18", "2a34"):
            return [Rejected(data, "unexpected-characteristic")]
        try:
            if characteristic == "2a18":
                record = _parse_glucose(data)
                if self._state is _Procedure.REPORTING:
                    self._records[record.sequence] = record
            else:
                context = _parse_context(data)
                if self._state is _Procedure.REPORTING:
                    self._contexts[context.sequence] = context
        except _Bad as bad:
            return [Rejected(data, bad.reason)]
        return []

    def _racp(self, data: bytes) -> list[Event]:
        response = decode_racp(data)
        if isinstance(response, Rejected):
            return [response]
        if isinstance(response, RacpCount):
            if self._state is _Procedure.COUNTING:
                return self._counted(response.count)
            return [DeviceInfo("racp-count", str(response.count))]
        if self._state is _Procedure.ABORTING:
            if response.request == RacpOp.ABORT:
                self._state = _Procedure.IDLE
            return [DeviceInfo("racp", response.name)]
        if self._state is _Procedure.COUNTING and response.request == RacpOp.REPORT_COUNT:
            # The meter cannot count: the reset check is skipped, nothing new was found.
            self._state = _Procedure.IDLE
            return [
                DeviceInfo("racp", f"count {response.name}: reset not checked"),
                *self._complete(),
            ]
        if self._state is not _Procedure.REPORTING or response.request != RacpOp.REPORT_RECORDS:
            return [DeviceInfo("racp", response.name)]
        self._state = _Procedure.IDLE
        if not response.finished:
            self._drop()
            return [DeviceInfo("racp", response.name)]
        if not self._records and self._last_seq is not None and not self._reset:
            # Nothing above the cursor: is the record at the cursor still there?
            self._writes.append(GattWrite("2a52", racp_count_from(self._last_seq)))
            self._state = _Procedure.COUNTING
            self._contexts.clear()
            return []
        return self._complete()

    def _counted(self, count: int) -> list[Event]:
        if count:
            self._state = _Procedure.IDLE
            return self._complete()  # the cursor's record is still there: nothing new
        self._reset = True
        self._writes.append(GattWrite("2a52", racp_report_all()))
        self._state = _Procedure.REPORTING
        return [self._reset_fact()]

    def _reset_fact(self) -> DeviceInfo:
        return DeviceInfo(
            "racp-reset",
            f"the meter holds no record at or above the cursor "
            f"{self._last_seq}: reset or replaced; downloading all its records",
        )

    def _key(self, seq: int, stamp: str, characteristic: str) -> str | None:
        if self._meter is None:
            return None
        return source_key("gls", self._meter, seq, stamp, characteristic)

    def _complete(self) -> list[Event]:
        events: list[Event] = []
        last = self._last_seq
        if self._records and last is not None and not self._reset and max(self._records) < last:
            # The meter ignored the filter and sent its whole memory, all below the cursor.
            self._reset = True
            events.append(self._reset_fact())
        fresh = sorted(s for s in self._records if self._reset or last is None or s > last)
        for seq in fresh:
            record, context = self._records[seq], self._contexts.pop(seq, None)
            event = record.event
            if isinstance(event, Measurement):
                event = replace(event, source_key=self._key(seq, record.stamp, "2a18"))
                if context is not None:
                    event = replace(event, context=event.context + context.items)
            events.append(event)
            hba1c = context.hba1c_event(record.device_time) if context else None
            if hba1c is not None:
                events.append(replace(hba1c, source_key=self._key(seq, record.stamp, "2a34")))
        for seq, context in sorted(self._contexts.items()):
            if seq in self._records:
                continue  # belongs to a record already stored (seq <= last_seq)
            hba1c = context.hba1c_event()
            if hba1c is not None:
                events.append(replace(hba1c, source_key=self._key(seq, "", "2a34")))
            else:
                events.append(DeviceInfo("glucose-context", f"sequence={seq} no-record"))
        old = len(self._records) - len(fresh)
        if old:  # the meter ignored the filter: these were committed before
            events.append(DeviceInfo("racp", f"skipped {old} records already stored"))
        self._procedures += 1
        message_id = f"racp-{self._procedures}"
        highest = fresh[-1] if fresh else None
        self._unacknowledged[message_id] = highest
        cursor = None
        if highest is not None and self._cursor_key is not None:
            cursor = (self._cursor_key, highest)
        self._drop()
        self._reset = False
        return [*events, MessageComplete(message_id, cursor)]

    def _drop(self) -> None:
        self._records.clear()
        self._contexts.clear()

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        if message_id not in self._unacknowledged:
            raise DecoderMisuse(f"no RACP download {message_id!r} waits for acknowledgement")
        highest = self._unacknowledged.pop(message_id)
        if stored and highest is not None:
            self._last_seq = highest  # after a reset this may be below the old cursor
