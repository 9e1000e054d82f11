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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rag_app.filters import Condition, Filter, normalise
from rag_app.types import Hit

ACCESS_KEY = "access"
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
        return cls(settings.server.access_policy, settings.server.groups)

    @property
    def enforced(self) -> bool:
        return bool(self.policy)

    def user_groups(self, user: str | None) -> set[str]:
        return set(self.groups.get(user, ())) if user else set()

    def can_read_value(self, user: str | None, value: Any) -> bool:
        """Whether `user` may read chunks whose `access` is `value` (one scalar value)."""
        if not self.enforced:
            return True
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
