"""``scripts/bench``: throughput and footprint figures, each beside its baseline measured in
the same run (issue 14). Run ``scripts/bench --help``."""
