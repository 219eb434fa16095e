"""Device simulators: encoders (inverse of the decoders) played on pseudo-terminals."""
