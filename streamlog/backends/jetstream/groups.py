"""Consumer groups and delayed appends on JetStream: not in this build yet.

Every function raises NotImplementedError naming the backend, except
``list_groups``: a topic that cannot have groups has none.
"""

from __future__ import annotations

from typing import Any

#: Marks this module as the placeholder (the tests name what it leaves out).
PLACEHOLDER = True


def _missing() -> NotImplementedError:
    return NotImplementedError("groups on JetStream")


def open_group(topic: Any, name: str, **options: Any) -> Any:
    """Create-or-open group ``name`` of ``topic`` and join it as one consumer."""
    raise _missing()


def group_config(topic: Any, name: str) -> dict[str, Any] | None:
    """The stored options of group ``name``, or None."""
    raise _missing()


def list_groups(topic: Any) -> list[str]:
    """Names of the topic's groups: none here."""
    return []


def delete_group(topic: Any, name: str) -> None:
    """Delete a group."""
    raise _missing()


def append_delayed(topic: Any, value: Any, deliver_at_ms: int, key: Any = None,
                   headers: Any = None) -> Any:
    """Append a record no group delivers before ``deliver_at_ms``."""
    raise _missing()
