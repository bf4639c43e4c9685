"""Storage backends behind the one public API: the embedded store and NATS JetStream."""
