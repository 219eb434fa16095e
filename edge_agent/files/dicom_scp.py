"""The DICOM C-STORE receiver (pynetdicom): imaging devices on the van's network send their
instances here (portable ultrasound, DICOM dermatoscope/otoscope cameras, ECG carts that
export DICOM waveforms).

The response is ``Success`` (0x0000) only after the instance is in the attachment store (file
and directory fsynced, row committed), the rule HL7's ``MSA|AA`` follows. An instance sent
again (same SOP Instance UID) is recognised and answered ``Success`` without a second copy.
A full budget answers ``Out of Resources`` (0xA700: the device keeps it and retries); bytes
that are not DICOM ``Cannot Understand`` (0xC000).

pynetdicom's own logger is kept at WARNING: its debug output can quote data set elements, and
the patient's name never goes into a log.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.errors import StoreError
from edge_agent.files.attachments import AttachmentsFull, AttachmentStore, FileKind
from edge_agent.files.dicom_meta import NotDicom

log = logging.getLogger(__name__)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class DicomReceiver:
    def __init__(self, files: AttachmentStore, *, ae_title: str = "EDGEAGENT",
                 host: str = "127.0.0.1", port: int = 11112, device: str = "dicom") -> None:
        self.files = files
        self.ae_title, self.host, self.port, self.device = ae_title, host, port, device
        self.stored = 0
        self.recognised = 0
        self.refused = 0
        self._server: Any = None

    def start(self) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = StoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server((self.host, self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        self.port = int(self._server.server_address[1])
        log.info("dicom: C-STORE receiver %s listening on %s:%d", self.ae_title, self.host,
                 self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

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
