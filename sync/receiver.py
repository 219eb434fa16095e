"""The reference central receiver lives in :mod:`sync.central.receiver`; this name stays for
the callers that import it from here (``edge-agent receive``, the demo, the tests)."""

from sync.central.receiver import Receiver, ReceiverCounts

__all__ = ["Receiver", "ReceiverCounts"]
