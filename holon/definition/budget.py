"""`Budget`: how much a run's model requests may use, and how usage adds up.

```python
wf = Workflow("research").Flow({...}).Budget(tokens=50_000, usd=2.0, requests=40)
```

The engine keeps a run's usage and budget in its checkpoint. Before each model request
it checks the usage against the budget; when one limit is reached the run pauses with
reason `budget exhausted`, and an operator raises the budget (`Resume(budget=...)`) or
stops the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["USAGE_FIELDS", "Budget", "add_usage", "exhausted"]

USAGE_FIELDS = ("tokens", "input_tokens", "output_tokens", "requests", "usd")
"""What a run's usage counts (`RunBody.usage`)."""


@dataclass(frozen=True)
class Budget:
    """Limits on what one run's model requests use; None leaves a measure unlimited.

    Args:
        tokens: input and output tokens together.
        usd: cost in US dollars (counted for requests whose price is known).
        requests: model requests.
    """

    tokens: int | None = None
    usd: float | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "usd", "requests"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"Budget({name}=...) must be a number >= 0, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The limits that are set, as kept in a run's checkpoint."""
        return {
            k: v
            for k, v in (("tokens", self.tokens), ("usd", self.usd), ("requests", self.requests))
            if v is not None
        }

    @classmethod
    def of(cls, value: Budget | Mapping[str, Any]) -> Budget:
        """A `Budget` from itself or a dict of its fields (a clear error otherwise)."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"tokens", "usd", "requests"})
            if unknown:
                raise ValueError(f"a budget has tokens, usd and requests; got {unknown[0]!r}")
            return cls(**value)
        raise TypeError(f"a budget is a Budget or a dict, got {value!r}")


def exhausted(budget: Mapping[str, Any] | None, usage: Mapping[str, Any]) -> str | None:
    """The measure of `budget` that `usage` has reached, or None while all have room."""
    if not budget:
        return None
    for name in ("tokens", "usd", "requests"):
        limit = budget.get(name)
        if limit is not None and usage.get(name, 0) >= limit:
            return name
    return None


def add_usage(usage: Mapping[str, Any], step: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """`usage` (a run's, `RunBody.usage`) with one model request's added, to the run's
    totals and to `step`'s."""

    def added(totals: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(totals)
        for name in USAGE_FIELDS:
            value = request.get(name)
            if value:
                out[name] = (
                    round(out.get(name, 0) + value, 9)
                    if name == "usd"
                    else out.get(name, 0) + value
                )
        return out

    steps = dict(usage.get("steps") or {})
    steps[step] = added(steps.get(step) or {})
    totals = added({k: v for k, v in usage.items() if k != "steps"})
    return {**totals, "steps": steps}
