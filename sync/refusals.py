"""How a downlink message is turned away: refused (with a reason that goes back to central) or
recognised as already applied. Shared by the signature check and the downlink's own rules."""

from __future__ import annotations


class DownlinkRefused(ValueError):
    """The message is not applied; ``reason`` goes back to central."""


class AlreadyApplied(Exception):
    """The retained configuration this unit applied already (seen again after a restart or a
    reconnect): nothing to do, nothing to refuse."""
