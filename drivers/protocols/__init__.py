"""Sans-I/O protocol decoders: bytes in, events out. Stdlib and edge_agent.models only."""
