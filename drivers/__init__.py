"""Device drivers: sans-I/O protocol decoders (``protocols``), transports, simulators."""
