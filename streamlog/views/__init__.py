"""Views over the log (queue, pub-sub, request-reply, event store) on ``streamlog.backend``.

A view is a thin layer over ordinary topics and consumer groups whose names
derive from the view's name (docs/views.md lists them); ``log.topics()``
shows them, and the usual tools (``streamlog describe``, ``groups``) work
on them. Views import ``streamlog.backend`` only, so they run unchanged on
any backend that provides it.
"""

from __future__ import annotations

from .. import backend


def derive_names(view: str, **suffixes: str) -> dict[str, str]:
    """The names a view derives from its own name: ``{role: view + suffix}``.

    ValueError when one would be longer than Kafka's 249-character topic
    name limit (the view's name is validated by the caller).
    """
    out = {}
    for role, suffix in suffixes.items():
        derived = view + suffix
        if len(derived) > backend.DERIVED_NAME_MAX_CHARS:
            raise ValueError(f"name {view!r} is too long: the derived name {derived[:40]!r}... "
                             f"would have {len(derived)} characters "
                             f"(at most {backend.DERIVED_NAME_MAX_CHARS})")
        out[role] = derived
    return out
