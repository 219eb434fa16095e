"""Store-and-forward to the central platform over MQTT 5 (outbox, codec, link, receiver)."""
