"""edge-agent: offline-first agent of a mobile connected medical unit."""

__version__ = "0.1.0"
