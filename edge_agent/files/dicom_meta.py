"""What the attachment store keeps of a DICOM file: its UIDs and modality (pydicom), pure.

Only identifiers of the study, series and instance are read; the patient's name and ids stay
in the file (they reach central inside it) and never in a log or an error message."""

from __future__ import annotations

import io
from dataclasses import dataclass

DICOM_MAGIC_OFFSET = 128
MEDIA_TYPE = "application/dicom"


@dataclass(frozen=True)
class DicomMeta:
    study_uid: str | None
    series_uid: str | None
    instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None


class NotDicom(ValueError):
    """The bytes are not a DICOM Part 10 file pydicom can read (no patient data in the text)."""


def is_dicom(head: bytes) -> bool:
    """A Part 10 file: a 128-byte preamble then ``DICM``."""
    return head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def read_meta(data: bytes) -> DicomMeta:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=[
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
                "SOPClassUID",
                "Modality",
            ],
        )
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        # The class only: a pydicom message may quote an element's value.
        raise NotDicom(f"not a readable DICOM file ({type(exc).__name__})") from None
    meta = getattr(ds, "file_meta", None)

    def text(name: str) -> str | None:
        value = ds.get(name)
        return str(value) if value not in (None, "") else None

    instance = text("SOPInstanceUID")
    if instance is None and meta is not None:
        instance = str(meta.get("MediaStorageSOPInstanceUID") or "") or None
    sop_class = text("SOPClassUID")
    if sop_class is None and meta is not None:
        sop_class = str(meta.get("MediaStorageSOPClassUID") or "") or None
    if instance is None:
        raise NotDicom("not a readable DICOM file (no SOP Instance UID)")
    return DicomMeta(
        text("StudyInstanceUID"), text("SeriesInstanceUID"), instance, sop_class, text("Modality")
    )
