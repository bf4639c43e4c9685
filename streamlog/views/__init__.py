"""Views over the log (queue, pub-sub, request-reply, event store) on ``streamlog.api``.

A view is a thin layer over ordinary topics and consumer groups whose names
derive from the view's name (docs/views.md lists them); ``log.topics()``
shows them, and the usual tools (``streamlog describe``, ``groups``) work
on them. Views import the contract (``streamlog.api``) and the leaf modules
only, so they run unchanged on any backend that provides it.
"""

from __future__ import annotations

from typing import Any

from streamlog import _limits, api
from streamlog.errors import ConfigMismatch


def derive_names(view: str, limit: int | None = None, **suffixes: str) -> dict[str, str]:
    """The names a view derives from its own name: ``{role: view + suffix}``.

    Derived topics and groups are ordinary ones that users open, inspect and
    delete by name, so each must itself be a valid name (at most 200
    characters); ``limit`` overrides that for names only the store uses
    (dead-letter topics named by a group: Kafka's 249). ValueError names the
    derived name that would be too long.
    """
    limit = _limits.NAME_MAX_CHARS if limit is None else limit
    out = {}
    for role, suffix in suffixes.items():
        derived = view + suffix
        if len(derived) > limit:
            raise ValueError(f"name {view[:40]!r}... is too long: its derived {role} name "
                             f"{view[:20]!r}...{suffix!r} would have {len(derived)} "
                             f"characters (at most {limit})")
        out[role] = derived
    return out


def check_view_topic(topic: api.Topic, kind: str, view: str) -> None:
    """ConfigMismatch when a topic a view uses was created compacted (it would lose messages)."""
    if topic.config.get("compact"):
        raise ConfigMismatch(f"topic {topic.name!r} is compacted; {kind} {view!r} needs a "
                             "plain topic (compaction would drop messages)")


def ensure_view_group(topic: api.Topic, group: str, kind: str, view: str,
                      **options: Any) -> None:
    """Create the group a view derives if it does not exist; ConfigMismatch if it exists
    in another mode.

    The group exists from the view's first opening, so its lag (the queue's
    depth, the unserved requests) shows in ``log.stats()`` and ``streamlog
    groups`` before any consumer runs. Once it exists this is one read: no
    consumer is opened, so a producer-only handle costs no group state.
    """
    cfg = topic.group_config(group)
    if cfg is None:
        topic.group(group, **options).close()  # create-or-open, atomically
        return
    mode = options.get("mode", "shared")
    if cfg.get("mode") != mode:
        raise ConfigMismatch(f"group {group!r} of topic {topic.name!r} exists with "
                             f"mode={cfg.get('mode')!r}; {kind} {view!r} needs mode={mode!r}")

