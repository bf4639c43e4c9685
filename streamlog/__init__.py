"""streamlog: an embedded, durable, log-structured streaming store."""
