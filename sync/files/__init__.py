"""Teleconsultation files from the unit to central, resumable over a bad link.

``protocol``: topics and messages (pure); ``uploader``: the unit's upload state machine (pure);
``sender``: its thin shell over the store and the attachment files, driven by the sync daemon.
"""
