"""Teleconsultation files: attachments in the store, and where they come from (the DICOM
C-STORE listener, drop folders)."""
