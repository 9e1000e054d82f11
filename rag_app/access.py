"""Who may read which chunks: the `access` metadata value, `server.groups` and `server.access_policy`.

A chunk may carry an `access` value (front matter or a folder's `metadata.toml`, e.g.
`public`, `internal`, `restricted`). The policy maps each value to the groups allowed to read
it; `server.groups` maps each user to their groups:

```toml
[server]
auth = ["ana:...", "bo:..."]
groups = { ana = ["engineering"], bo = ["stores"] }
access_policy = { internal = ["*"], restricted = ["engineering"] }
```

Rules (values compare case-insensitively):

- no policy configured: nothing is enforced (every chunk is readable);
- `public`, and chunks without an `access` value, are readable by everyone;
- any other value is readable only by users in one of the groups the policy lists for it
  (`"*"` means every logged-in user); a value the policy does not list is readable by nobody;
- a list-valued `access` (e.g. `[internal, hr]`) needs every one of its values to be readable.

`AccessPolicy.filter_for(user, values)` turns a user into a `Filter` (`access` not in the
values they may not read) that is ANDed with the user's own filter and applied to BM25 and
Chroma *before* fusion, so a forbidden chunk never even takes a candidate slot.
`AccessPolicy.visible` re-checks the final hits against the raw chunk metadata, so a chunk
the filter cannot see (list-valued access, or indexed after the filter was computed) is
still never shown. A policy without `server.auth` is a configuration error (see
`rag_app.config.ServerSettings`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rag_app.filters import Condition, Filter, normalise
from rag_app.fsutil import atomic_write_text
from rag_app.types import Hit

log = logging.getLogger(__name__)

ACCESS_KEY = "access"
POLICY_FILE = "access-policy.json"  # in the workspace: the policy its chunks were ingested under
PUBLIC = "public"
EVERYONE = "*"


def _norm(value: Any) -> str:
    return normalise(value).lower()


class AccessPolicy:
    """Read rights of users over chunk `access` values (see the module docstring)."""

    def __init__(
        self, policy: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]]
    ) -> None:
        self.policy = {_norm(value): set(allowed) for value, allowed in policy.items()}
        self.groups = {user: set(member_of) for user, member_of in groups.items()}

    @classmethod
    def from_settings(cls, settings: Any) -> AccessPolicy:
        """The configured policy, else the one recorded in the workspace when it was
        ingested (`save_policy`): a chat started from another folder, without the
        `rag-app.toml` that set it, still enforces it (fails closed, issue 30)."""
        server = settings.server
        if server.access_policy:
            return cls(server.access_policy, server.groups)
        recorded = load_policy(settings.workspace)
        if recorded is None:
            return cls({}, server.groups)
        log.warning(
            "access policy from %s (no server.access_policy configured here)",
            Path(settings.workspace) / POLICY_FILE,
        )
        return cls(recorded["access_policy"], server.groups or recorded.get("groups", {}))

    @property
    def enforced(self) -> bool:
        return bool(self.policy)

    def user_groups(self, user: str | None) -> set[str]:
        return set(self.groups.get(user, ())) if user else set()

    def can_read_value(self, user: str | None, value: Any) -> bool:
        """Whether `user` may read chunks whose `access` is `value` (one scalar value; the
        index stores a list as "internal,restricted", which needs every part readable)."""
        if not self.enforced:
            return True
        if isinstance(value, str) and "," in value:
            return all(self.can_read_value(user, part) for part in value.split(",") if part.strip())
        norm = _norm(value)
        if norm == PUBLIC:
            return True
        allowed = self.policy.get(norm)
        if not allowed or not user:
            return False
        return EVERYONE in allowed or bool(allowed & self.user_groups(user))

    def can_read(self, user: str | None, metadata: Mapping[str, Any]) -> bool:
        """Whether `user` may read a chunk with this metadata."""
        if not self.enforced or ACCESS_KEY not in metadata:
            return True
        value = metadata[ACCESS_KEY]
        if value is None:
            return True
        if isinstance(value, list | tuple | set | frozenset):
            return all(self.can_read_value(user, v) for v in value)
        if isinstance(value, Mapping):
            return False
        return self.can_read_value(user, value)

    def denied_values(self, user: str | None, values: Iterable[Any]) -> list[str]:
        """The `access` values among `values` that `user` may not read (normalised text)."""
        if not self.enforced:
            return []
        return sorted({normalise(v) for v in values if not self.can_read_value(user, v)})

    def filter_for(
        self, user: str | None, values: Iterable[Any], base: Filter | None = None
    ) -> Filter | None:
        """`base` AND "access is none of the values `user` may not read".

        `values` are the `access` values present in the index (e.g.
        `Corpus.filter_values(["access"])["access"]`). Chunks without `access` pass.
        """
        denied = self.denied_values(user, values)
        if not denied:
            return base
        own = Filter((Condition(ACCESS_KEY, "nin", tuple(denied)),))
        return base.and_(own) if base else own

    def visible(self, user: str | None, hits: Iterable[Hit]) -> list[Hit]:
        """Only the hits `user` may read (the last line of defence after the filter)."""
        return [h for h in hits if self.can_read(user, h.chunk.metadata)]

    def describe(self, user: str | None) -> str:
        if not self.enforced:
            return "access control off"
        readable = sorted(v for v in self.policy if self.can_read_value(user, v))
        return f"{user or 'anonymous'} reads: public, {', '.join(readable) or 'nothing else'}"


def save_policy(settings: Any) -> None:
    """Record the configured policy in the workspace (`rag-app ingest` calls this), so it
    travels with the chunks it protects rather than with the folder a command ran in."""
    server = settings.server
    if not server.access_policy:
        return
    payload = {"access_policy": server.access_policy, "groups": server.groups}
    atomic_write_text(
        Path(settings.workspace) / POLICY_FILE, json.dumps(payload, indent=2, sort_keys=True)
    )


def load_policy(workspace: Path) -> dict[str, Any] | None:
    """The workspace's recorded policy, or None. A damaged file is an error, not "no policy":
    failing open would serve restricted chunks."""
    path = Path(workspace) / POLICY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        policy = {str(k): [str(g) for g in v] for k, v in data["access_policy"].items()}
        groups = {str(k): [str(g) for g in v] for k, v in (data.get("groups") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path} is damaged ({exc}); fix or delete it (deleting lifts the recorded policy)"
        ) from exc
    return {"access_policy": policy, "groups": groups}
