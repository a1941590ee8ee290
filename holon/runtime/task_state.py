"""`ctx.State` of an `.Execute()` workflow: durable key-value state that replays.

Changes are validated at once against the State model (when there is one) and kept as
pending until the next checkpoint journals them. On resume the journal's changes are
applied as each recorded call replays, so the state is rebuilt exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from holon._json import to_json_value
from holon._naming import snake_case_aliases
from holon.errors import StateValidationError
from holon.runtime.context import validate_state
from holon.sealing import Keyring

__all__ = ["TaskState"]


@snake_case_aliases
class TaskState:
    """`ctx.State` of an `.Execute()` workflow: durable key-value state.

    Changes are validated at once against the State model (when the workflow has one)
    and stored with the next checkpoint.
    """

    def __init__(
        self,
        initial: dict[str, Any],
        model: type[BaseModel] | None,
        run_id: str,
        keyring: Keyring | None = None,
    ):
        self._values = dict(initial)
        self._model = model
        self._run_id = run_id
        self._keyring = keyring
        self.pending_set: dict[str, Any] = {}
        self.pending_unset: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._change({**self._values, key: value}, set_keys=[key], unset_keys=[])

    def delete(self, key: str) -> None:
        if key in self._values:
            rest = {k: v for k, v in self._values.items() if k != key}
            self._change(rest, set_keys=[], unset_keys=[key])

    def clear(self) -> None:
        self._change({}, set_keys=[], unset_keys=list(self._values))

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _change(self, proposed: dict[str, Any], set_keys: list[str], unset_keys: list[str]) -> None:
        if not all(isinstance(k, str) for k in set_keys):
            raise StateValidationError(
                f"state keys are strings, got {set_keys!r}", run_id=self._run_id
            )
        if self._model is None:  # with a model, the model says how each field is stored
            proposed = {
                k: to_json_value(
                    v, what=f"state {k!r}", run_id=self._run_id, step=None, keyring=self._keyring
                )
                for k, v in proposed.items()
            }
        validated = validate_state(
            self._model, proposed, run_id=self._run_id, step=None, keyring=self._keyring
        )
        for key in unset_keys:
            self.pending_set.pop(key, None)
            if key in validated:  # a model field falls back to its default
                self.pending_set[key] = validated[key]
            else:
                self.pending_unset.add(key)
        for key in set_keys:
            self.pending_unset.discard(key)
            self.pending_set[key] = validated[key]
        self._values = validated

    def apply(self, state_set: Mapping[str, Any], state_unset: list[str]) -> None:
        """Apply journaled changes (replay); they replace anything pending."""
        values = {k: v for k, v in self._values.items() if k not in state_unset}
        values.update(state_set)
        self._values = values
        self.pending_set.clear()
        self.pending_unset.clear()

    def rebase(self, stored: dict[str, Any]) -> None:
        """At the first live call: continue from the stored state (which also holds
        operators' `Resume(state=...)` patches) plus what replay changed since."""
        values = {k: v for k, v in stored.items() if k not in self.pending_unset}
        values.update(self.pending_set)
        self._values = values

    def take_pending(self) -> tuple[dict[str, Any], list[str]]:
        pending = (dict(self.pending_set), sorted(self.pending_unset))
        self.pending_set.clear()
        self.pending_unset.clear()
        return pending
