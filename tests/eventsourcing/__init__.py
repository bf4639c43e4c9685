"""The eventsourcing library's own test cases, run against streamlog.eventsourcing."""
