"""The DICOM C-STORE receiver (pynetdicom): imaging devices on the van's network send their
instances here (portable ultrasound, DICOM dermatoscope/otoscope cameras, ECG carts that
export DICOM waveforms).

The response is ``Success`` (0x0000) only after the instance is in the attachment store (file
and directory fsynced, row committed), the rule HL7's ``MSA|AA`` follows. An instance sent
again (same SOP Instance UID) is recognised and answered ``Success`` without a second copy.
A full budget answers ``Out of Resources`` (0xA700: the device keeps it and retries); bytes
that are not DICOM ``Cannot Understand`` (0xC000).

Compressed instances (ultrasound clips, dermatoscope and retinal camera photos) are accepted in
the usual compressed transfer syntaxes (:data:`TRANSFER_SYNTAXES`) and kept as sent: the data
set is stored in the transfer syntax the device negotiated, never decompressed or re-encoded.

An association must call this receiver's AE title (``dicom_ae_title``), and when
``calling_aes`` is not empty, come from one of those AE titles: anything else is rejected
(A-ASSOCIATE-RJ, "called/calling AE title not recognised"), logged with the AE titles only
and counted (:attr:`DicomReceiver.rejected`).

pynetdicom's own logger is kept at WARNING: its debug output can quote data set elements, and
the patient's name never goes into a log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from edge_agent.errors import StoreError
from edge_agent.files.attachments import AttachmentsFull, AttachmentStore, FileKind
from edge_agent.files.dicom_meta import NotDicom

log = logging.getLogger(__name__)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

# What an imaging device may send in, besides the uncompressed defaults.
TRANSFER_SYNTAXES: Final = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old devices)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


class DicomReceiver:
    def __init__(
        self,
        files: AttachmentStore,
        *,
        ae_title: str = "EDGEAGENT",
        host: str = "127.0.0.1",
        port: int = 11112,
        device: str = "dicom",
        calling_aes: Sequence[str] = (),
    ) -> None:
        self.files = files
        self.ae_title, self.host, self.port, self.device = ae_title, host, port, device
        self.calling_aes = tuple(calling_aes)  # empty: any calling AE
        self.stored = 0
        self.recognised = 0
        self.refused = 0
        self.rejected = 0  # associations rejected (wrong called AE, calling AE not allowed)
        self._server: Any = None

    def start(self) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.ae_title)
        for context in StoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        ae.require_called_aet = True  # pynetdicom's default accepts any called AE title
        ae.require_calling_aet = list(self.calling_aes)
        self._server = ae.start_server(
            (self.host, self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.on_store), (evt.EVT_REJECTED, self.on_rejected)],
        )
        self.port = int(self._server.server_address[1])
        log.info(
            "dicom: C-STORE receiver %s listening on %s:%d", self.ae_title, self.host, self.port
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def on_rejected(self, event: Any) -> None:
        """pynetdicom's thread: an association this receiver rejected. AE titles only (they
        name devices, never a patient)."""
        self.rejected += 1
        request = event.assoc.requestor
        called = _printable(getattr(request.primitive, "called_ae_title", ""))
        calling = _printable(getattr(request, "ae_title", ""))
        if called != self.ae_title:
            why = f"it called AE title {called!r}, not {self.ae_title!r}"
        elif self.calling_aes and calling not in self.calling_aes:
            why = f"calling AE title {calling!r} is not in dicom_calling_aes"
        else:
            why = "pynetdicom refused it (too many associations or user identity)"
        log.warning("dicom: rejected an association from %s: %s", _peer(request), why)

    def on_store(self, event: Any) -> int:
        """pynetdicom's thread: durable first, then the status."""
        try:
            data = bytes(event.encoded_dataset())
        except (ValueError, AttributeError, KeyError) as exc:
            self.refused += 1
            log.warning("dicom: an instance could not be encoded (%s)", type(exc).__name__)
            return CANNOT_UNDERSTAND
        try:
            added = self.files.add_bytes(data, kind=FileKind.DICOM, device=self.device)
        except NotDicom as exc:
            self.refused += 1
            log.warning("dicom: refused %d bytes: %s", len(data), exc)
            return CANNOT_UNDERSTAND
        except AttachmentsFull as exc:
            self.refused += 1
            log.error("dicom: %s", exc)
            return OUT_OF_RESOURCES
        except (StoreError, OSError) as exc:
            self.refused += 1
            log.error("dicom: could not store an instance (%s)", type(exc).__name__)
            return OUT_OF_RESOURCES
        if added.new:
            self.stored += 1
        else:
            self.recognised += 1
        return SUCCESS


def _printable(value: object) -> str:
    """An AE title as received (16 characters at most), safe to log."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return "".join(c if c.isprintable() else "?" for c in text.strip())[:16]


def _peer(request: Any) -> str:
    return f"{getattr(request, 'address', '?')}:{getattr(request, 'port', '?')}"
