"""Developer scripts; scripts/benchmarks is the Python behind scripts/bench."""
