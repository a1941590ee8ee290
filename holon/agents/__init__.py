"""Agents from agent frameworks, made durable inside holon steps.

`holon.agents.pydantic_ai` (the `holon[pydantic-ai]` extra): `HolonDurability`, the
pydantic-ai capability that checkpoints each model request and tool call of an agent
run in the step running it, and `PydanticAgent`, which makes such an agent a
`holon.Agent` for `.Agents({...})`.
"""

from __future__ import annotations

try:
    import pydantic_ai  # noqa: F401
except ModuleNotFoundError as missing:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "holon.agents needs pydantic-ai: pip install 'holon[pydantic-ai]'"
    ) from missing

from holon.agents.pydantic_ai import HolonDurability, PydanticAgent, tool_idempotency_key

__all__ = ["HolonDurability", "PydanticAgent", "tool_idempotency_key"]
