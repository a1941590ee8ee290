"""Who calls the API, and what they may do.

Callers present a bearer token; the token maps to an `Identity` (a name, roles and
teams). Tokens are kept only as SHA-256 digests: a leaked token file does not leak
tokens. The identity of every start, decision and steer comes from the token alone,
never from a request body.

The configuration is a JSON or YAML document, from a file (`HOLON_AUTH_FILE`) or the
environment (`HOLON_AUTH`, the document itself):

```yaml
identities:
  - name: alice
    token_sha256: 5e88...        # or `token: <plain>`, hashed when read
    roles: [ops]
    teams: [payments]
permissions:                      # optional; without a rule for a workflow, any
  - workflow: deploy              # authenticated identity may start, steer, approve
    start: [alice, "role:ops"]
    steer: ["role:ops"]
    approve: ["role:ops"]
  - team: payments                # workflows whose owner is this team
    start: ["team:payments"]
```

An identity with the role `admin` may do anything, and only admins may register
workflows. With nothing configured, `holon serve` makes one random admin token and
prints it once (`Auth.generate`): the API is never open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from holon.errors import HolonError

__all__ = ["ADMIN", "Auth", "AuthConfigError", "Identity", "Permission", "Rule", "hash_token"]

ADMIN = "admin"
"""The role that may do everything."""

Permission = Literal["start", "steer", "approve"]
PERMISSIONS: tuple[Permission, ...] = ("start", "steer", "approve")


class AuthConfigError(HolonError):
    """The token or permission configuration does not read."""


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token is kept as."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    name: str
    roles: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles

    def matches(self, entry: str) -> bool:
        """Whether a permission entry names this identity: its name, `role:R` for a
        role it holds, `team:T` for a team it is in, or `*` for anyone."""
        if entry == "*" or entry == self.name:
            return True
        kind, _, value = entry.partition(":")
        return (kind == "role" and value in self.roles) or (kind == "team" and value in self.teams)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "roles": sorted(self.roles), "teams": sorted(self.teams)}


@dataclass(frozen=True)
class Rule:
    """Who may start, steer and approve the runs of one workflow, or of a team's
    workflows (those whose catalogue owner is the team)."""

    workflow: str | None = None
    team: str | None = None
    allowed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def covers(self, workflow: str, owner: str | None) -> bool:
        if self.workflow is not None:
            return self.workflow == workflow
        return owner is not None and self.team == owner


class Auth:
    """Tokens (by digest) and permission rules."""

    def __init__(self, identities: Mapping[str, Identity], rules: Iterable[Rule] = ()) -> None:
        """`identities` maps token digests (`hash_token`) to identities."""
        self._by_digest = dict(identities)
        self.rules = list(rules)

    @classmethod
    def generate(cls, name: str = "admin") -> tuple[Auth, str]:
        """An `Auth` with one random admin token, and that token (shown once)."""
        token = secrets.token_urlsafe(32)
        return cls({hash_token(token): Identity(name, frozenset({ADMIN}))}), token

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Identity], rules: Iterable[Rule] = ()) -> Auth:
        """From plain tokens (for tests and scripts); only their digests are kept."""
        return cls({hash_token(t): i for t, i in tokens.items()}, rules)

    @classmethod
    def from_document(cls, document: Any, where: str = "auth configuration") -> Auth:
        """From the configuration document described in the module docstring."""
        if not isinstance(document, dict):
            raise AuthConfigError(f"{where}: expected a mapping with `identities`")
        unknown = sorted(set(document) - {"identities", "permissions"})
        if unknown:
            raise AuthConfigError(f"{where}: unknown field {unknown[0]!r}")
        identities: dict[str, Identity] = {}
        for index, entry in enumerate(document.get("identities") or []):
            digest, identity = _identity(entry, f"{where}: identities[{index}]")
            identities[digest] = identity
        rules = [
            _rule(entry, f"{where}: permissions[{index}]")
            for index, entry in enumerate(document.get("permissions") or [])
        ]
        return cls(identities, rules)

    @classmethod
    def from_file(cls, path: str | Path) -> Auth:
        text = Path(path).read_text()
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise AuthConfigError(f"{path}: not YAML or JSON: {exc}") from None
        return cls.from_document(document, str(path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Auth | None:
        """From `HOLON_AUTH_FILE` or `HOLON_AUTH` (JSON or YAML); None when neither is set."""
        env = os.environ if environ is None else environ
        if env.get("HOLON_AUTH_FILE"):
            return cls.from_file(env["HOLON_AUTH_FILE"])
        if env.get("HOLON_AUTH"):
            try:
                document = yaml.safe_load(env["HOLON_AUTH"])
            except yaml.YAMLError as exc:
                raise AuthConfigError(f"HOLON_AUTH: not YAML or JSON: {exc}") from None
            return cls.from_document(document, "HOLON_AUTH")
        return None

    def identify(self, token: str) -> Identity | None:
        """The identity a presented token maps to, if any."""
        digest = hash_token(token)
        # A dict lookup by digest: the timing reveals nothing of a token's characters.
        return self._by_digest.get(digest)

    def knows_digest(self, digest: str) -> Identity | None:
        """The identity of a token digest kept in a session, if the token is still valid."""
        for known, identity in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return identity
        return None

    def may(
        self, identity: Identity, permission: Permission, workflow: str, owner: str | None
    ) -> bool:
        """Whether `identity` may `permission` runs of `workflow` (owned by `owner`).

        Admins may do anything. When rules cover the workflow, one of them must list the
        identity for the permission; a workflow no rule covers is open to every
        authenticated identity."""
        if identity.admin:
            return True
        covering = [r for r in self.rules if r.covers(workflow, owner)]
        if not covering:
            return True
        return any(
            identity.matches(entry)
            for rule in covering
            for entry in rule.allowed.get(permission, ())
        )


def _identity(entry: Any, where: str) -> tuple[str, Identity]:
    if not isinstance(entry, dict):
        raise AuthConfigError(f"{where}: expected a mapping with name and token_sha256")
    unknown = sorted(set(entry) - {"name", "token", "token_sha256", "roles", "teams"})
    if unknown:
        raise AuthConfigError(f"{where}: unknown field {unknown[0]!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise AuthConfigError(f"{where}.name: a non-empty string is needed, got {name!r}")
    if ("token" in entry) == ("token_sha256" in entry):
        raise AuthConfigError(f"{where}: give exactly one of token and token_sha256")
    if "token" in entry:
        token = entry["token"]
        if not isinstance(token, str) or len(token) < 16:
            raise AuthConfigError(f"{where}.token: a string of 16 characters or more is needed")
        digest = hash_token(token)
    else:
        digest = entry["token_sha256"]
        if not isinstance(digest, str) or len(digest) != 64:
            raise AuthConfigError(f"{where}.token_sha256: a SHA-256 hex digest is needed")
        digest = digest.lower()
    return digest, Identity(
        name,
        _names(entry.get("roles"), f"{where}.roles"),
        _names(entry.get("teams"), f"{where}.teams"),
    )


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise AuthConfigError(f"{where}: expected a mapping with workflow or team")
    unknown = sorted(set(entry) - {"workflow", "team", *PERMISSIONS})
    if unknown:
        raise AuthConfigError(
            f"{where}: unknown field {unknown[0]!r}; fields: workflow, team, "
            f"{', '.join(PERMISSIONS)}"
        )
    if ("workflow" in entry) == ("team" in entry):
        raise AuthConfigError(f"{where}: give exactly one of workflow and team")
    allowed: dict[str, tuple[str, ...]] = {
        p: tuple(sorted(_names(entry.get(p), f"{where}.{p}"))) for p in PERMISSIONS
    }
    return Rule(workflow=entry.get("workflow"), team=entry.get("team"), allowed=allowed)


def _names(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}: expected a list of names, got {json.dumps(value)}")
    return frozenset(value)
