"""Size limits on what people and steps send into a run, checked before anything is stored.

A value is measured as the UTF-8 bytes of its compact JSON, the form the store keeps.
Over its limit it is refused with `ValueTooLarge`, which names the field and both sizes,
and nothing is written. A workflow sets its own with `.Limits(...)`:

```python
from holon import Limits, Workflow

wf = Workflow("ingest").Limits(input=4 * 1024 * 1024)
assert wf.size_limits == Limits(input=4 * 1024 * 1024)
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from holon._json import compact_encoder
from holon.errors import ValueTooLarge

__all__ = ["MAX_LIMIT", "Limits", "json_size"]

KiB = 1024
MiB = 1024 * KiB

MAX_LIMIT = 64 * MiB
"""No limit may exceed this: it is also the largest value a store reads back (a larger
stored value can only be a corrupt record, see `holon.stores._codec`)."""

_encode = compact_encoder()


def json_size(value: Any) -> int:
    """The UTF-8 bytes of `value`'s compact JSON (`value` is JSON data already)."""
    text = _encode(value)
    # Characters count at most a quarter of the bytes: encode only text that may be big.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Limits:
    """The largest JSON, in bytes, a run accepts for each kind of value.

    The defaults suit values that travel in messages; large documents belong in a blob
    store, with a reference in the run (a later release keeps large step outputs out of
    the record by itself, and raises `step_output` then).
    """

    input: int = 1 * MiB
    """A run's input (`Run(input)`)."""
    answer: int = 256 * KiB
    """An answer to a `HumanInput` (`Answer(value)`), and a decision's comment."""
    event_payload: int = 1 * MiB
    """The payload of an event sent to a run (`Send(event, payload)`)."""
    state_patch: int = 1 * MiB
    """What one step's `SetState` calls, or one `Resume(state=...)`, change."""
    step_output: int = 1 * MiB
    """A step's recorded output (`Next(step, output=...)`, a branch's result, a task's
    result in `.Execute()`)."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{field.name} must be a positive int, got {value!r}")
            if value > MAX_LIMIT:
                raise ValueError(
                    f"Limits.{field.name} is {value:,} bytes; the most a store holds in one "
                    f"value is {MAX_LIMIT:,}"
                )

    def check(
        self,
        kind: str,
        value: Any,
        *,
        what: str,
        run_id: str | None = None,
        step: str | None = None,
        workflow: str | None = None,
    ) -> None:
        """Raise `ValueTooLarge` when `value` (JSON data) is over the limit `kind`.

        Args:
            kind: the field of `Limits` that applies (`"answer"`, ...).
            value: the value as JSON data.
            what: the value as the error names it, e.g. `"answer to run 'r1'"`.
        """
        limit: int = getattr(self, kind)
        size = json_size(value)
        if size > limit:
            raise ValueTooLarge(
                f"{what} is {size:,} bytes of JSON, over the limit of {limit:,} bytes "
                f"(Limits.{kind}); nothing was stored",
                field=kind,
                size=size,
                limit=limit,
                run_id=run_id,
                step=step,
                workflow=workflow,
            )
