"""The JetStream backend: streamlog stores kept in NATS JetStream streams and consumers."""
