"""`ctx`: what a step sees of its run, and how it changes the run's state."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import anyio
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from holon._json import to_json_value
from holon._naming import snake_case_aliases
from holon.definition.steps import DEFAULT_RULES, DataRules
from holon.errors import SecretKeyError, StateReadOnly, StateValidationError
from holon.runtime.agents import StepAgents
from holon.sealing import (
    REDACTED,
    SECRET_KEYS_ENV,
    Keyring,
    Secret,
    has_secrets,
    open_secrets,
    redact,
    seal_model,
    secret_name,
)

__all__ = ["Context", "validate_state"]

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")

logger = logging.getLogger("holon.step")

_UNKNOWN = 1 << 62
"""A patch size bound that says: measure it."""

JOURNAL_PREFIX = "journal:"
"""Results under keys with this prefix are the journal of durable agents' runs inside
steps (`holon.runtime.journal`), not step results."""

FLUSH_LIMIT = 5.0
"""Seconds a step's end waits for what it emitted to be published (a feed never holds a
run up for long)."""

_SCALARS = frozenset({int, float, bool, type(None)})


def validate_state(
    model: type[BaseModel] | None,
    state: dict[str, Any],
    *,
    run_id: str,
    step: str | None,
    keyring: Keyring | None = None,
) -> dict[str, Any]:
    """Validate a whole state against the State model; return its JSON form, its
    secrets sealed with `keyring` (stored ones are opened to be validated)."""
    if model is None:
        return state
    secret = has_secrets(model)
    if secret:
        state = open_secrets(state, keyring)
    instance = _state_instance(model, state, run_id=run_id, step=step)
    dumped = instance.model_dump(mode="json")
    if secret:
        return seal_model(instance, dumped, keyring, _refuse(run_id, step))
    return dumped


def _refuse(run_id: str, step: str | None) -> Callable[[str], SecretKeyError]:
    def refuse(path: str) -> SecretKeyError:
        where = f"step {step!r} of run {run_id!r}" if step else f"run {run_id!r}"
        return SecretKeyError(
            f"{where}: state field {path!r} holds a secret, and no key is configured to "
            f"seal it; set {SECRET_KEYS_ENV} or Workflow.Secrets(...) (a secret is never "
            "stored masked or in plaintext)",
            run_id=run_id,
            step=step,
        )

    return refuse


def _state_instance(
    model: type[BaseModel],
    state: dict[str, Any],
    *,
    run_id: str,
    step: str | None,
    read_only: bool = False,
) -> BaseModel:
    if read_only:
        model = _read_only(model)
    try:
        # pydantic's validator called directly, not through `model_validate`: a step
        # that reads and sets state validates twice, and the wrapper's two calls cost
        # 5 % of a step (7,900 of 152,000 instructions, a sync step on the memory store).
        instance: BaseModel = model.__pydantic_validator__.validate_python(state)
        return instance
    except PydanticValidationError as exc:
        raise StateValidationError(
            f"state of run {run_id!r}{f' in step {step!r}' if step else ''} does not match "
            f"{model.__name__}: {_describe(exc, model)}",
            errors=[_redacted_error(e, model) for e in exc.errors(include_url=False)],
            run_id=run_id,
            step=step,
        ) from None


_READ_ONLY: dict[type[BaseModel], type[BaseModel]] = {}


def _read_only(model: type[BaseModel]) -> type[BaseModel]:
    """A subclass of the State model whose instances refuse to change: an assignment to
    `ctx.State.field` would be lost (state changes only through `SetState`, which
    validates, checks the size and checkpoints them), so it fails saying so. Made once
    per model; an instance is still an instance of the model."""
    made = _READ_ONLY.get(model)
    if made is None:

        def refuse(self: BaseModel, name: str, *_: Any) -> None:
            raise StateReadOnly(f"ctx.State.{name}")

        made = type(
            model.__name__,
            (model,),
            {
                "__module__": model.__module__,
                "__qualname__": model.__qualname__,
                "__setattr__": refuse,
                "__delattr__": refuse,
            },
        )
        _READ_ONLY[model] = made
    return made


class _ReadOnlyState(dict[str, Any]):
    """The state of a workflow without a State model, as `ctx.State` shows it: a dict
    that refuses changes, for the same reason as `_read_only`."""

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise StateReadOnly("ctx.State[...]")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse


_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}


def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """A State model's field names, looked up once per model: every `SetState` checks
    its keys, and reading `model_fields` each time costs 2.7 % of a step (4,100 of
    152,000 instructions)."""
    names = _FIELD_NAMES.get(model)
    if names is None:
        names = _FIELD_NAMES[model] = frozenset(model.model_fields)
    return names


def _describe(exc: PydanticValidationError, model: type[BaseModel]) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = _redacted_error(dict(err), model).get("input")
        parts.append(f"{where}: {err['msg']} (got {got!r})")
    return "; ".join(parts)


def _redacted_error(error: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's error with the input hidden when it is a secret's (errors are shown
    and logged: a secret must not be in them)."""
    out = dict(error)
    loc = out.get("loc") or ()
    field = model.model_fields.get(str(loc[0])) if loc else None
    secret_field = field is not None and (
        field.metadata and any(isinstance(m, Secret) for m in field.metadata)
    )
    if secret_field or (loc and secret_name(str(loc[-1]))) or (has_secrets(model) and not loc):
        out["input"] = REDACTED
    else:
        out["input"] = redact(out.get("input"))
    return out


@snake_case_aliases
class Context(Generic[InputT, StateT]):
    """The `ctx` a step receives. Annotate as `ctx: Context[MyInput, MyState]`.

    Attributes:
        Input: the run's input, an instance of the Input model (a dict without one).
        RunId: the run's id.
        StepName: the running step's name (a branch's name inside `Parallel`).
        Attempt: 1 on the first attempt of this step occurrence, 2 after a crash or
            retry, and so on.
        IdempotencyKey: stable for this run, step and occurrence across retries and
            crashes, different in every other run: pass it to external systems so a
            repeated attempt is recognised as the same mutation.
        StepResults: results recorded so far, by step name.
        Decision: the decision that closed the last wait (e.g. the approval), else None.
        Agents: the agents given to `.Agents({...})`: `await ctx.Agents.name` (or
            `ctx.Agents["name"]`) opens a handle for this step (see `holon.Agent`).
    """

    needs_finish = False
    """Set once the step opened agent handles or emitted: `finish` has work to do."""
    emitted = False
    """Set once the step emitted (`Emit`)."""

    journal_positions: dict[str, int] | None = None
    """How many journal units of each name this step attempt made so far (made by the
    first): units numbered in the order a step makes them (`RunServices.position`)."""

    _patch_bound = 2
    """An upper bound of the JSON size of `state_patch`, kept while it is cheap to (a
    class default: most steps never set state)."""

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        attempt: int,
        idempotency_key: str,
        input: InputT,
        state: dict[str, Any],
        state_model: type[BaseModel] | None,
        results: Mapping[str, Any],
        decision: Any,
        agents: Mapping[str, Any],
        rules: DataRules = DEFAULT_RULES,
        services: Any = None,
    ) -> None:
        self.RunId = run_id
        self.StepName = step
        self.Attempt = attempt
        self.IdempotencyKey = idempotency_key
        self.Input: InputT = input
        self._results = results
        self._decision = decision
        self._agents = agents
        self.services = services
        """The run's services (`holon.runtime.journal.RunServices`): the journal, the
        live feed, agent lookup; None for a context made outside an engine."""
        self.agent_handles: StepAgents | None = None
        """`ctx.Agents` once the step touched it (its handles are closed at the end)."""
        self._state = state
        self._state_model = state_model
        self._state_view: Any = None
        self.rules = rules
        """The workflow's size limits and secrets (`DataRules`)."""
        self.state_patch: dict[str, Any] = {}
        """What this step changed, applied to the run's state when the step commits."""
        self.log_entries: Sequence[dict[str, Any]] = ()
        """What `Log` recorded in this step, committed with its checkpoint (a list
        made by the first `Log`)."""

    @property
    def Agents(self) -> StepAgents:
        """The workflow's agents: `await ctx.Agents.name` opens a handle for this step."""
        agents = self.agent_handles
        if agents is None:
            self.needs_finish = True
            services = self.services
            agents = self.agent_handles = (
                services.agents(self) if services is not None else StepAgents(self, self._agents)
            )
        return agents

    def Emit(self, kind: str, data: Any = None) -> None:
        """Send progress (or a model's tokens) to everyone watching the run
        (`RunHandle.Watch()`), now, without checkpointing it."""
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"ctx.Emit() needs a kind (a non-empty string), got {kind!r}")
        if self.services is not None:
            self.services.emit(self.StepName, kind, data)
            self.emitted = self.needs_finish = True

    async def finish(self, ending: str) -> None:
        """What the step leaves to do as it ends, however it ends (`ending`): close the
        agent handles it left open, and see what it emitted published to other
        processes' watchers before its checkpoint is (so they get it before the end)."""
        if self.agent_handles is not None:
            await self.agent_handles.close_left_open(ending)
        if self.emitted and self.services is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_LIMIT):
                await self.services.flush()

    @property
    def Decision(self) -> Any:
        """The decision that closed the last wait (e.g. the approval, an answer), else
        None; a secret in an answer is opened (a `SecretStr` again)."""
        decision = self._decision
        keyring = self.rules.keyring
        if decision is not None and keyring is not None:
            return open_secrets(decision, keyring)
        return decision

    @property
    def StepResults(self) -> Mapping[str, Any]:
        """Results recorded so far, by step name."""
        # A read-only view, not a copy: the engine replaces a run's results on every
        # commit and never changes them in place. With keys, sealed secrets are opened
        # as each result is read (back into `SecretStr`s).
        keyring = self.rules.keyring
        results = self._results
        if self.services is not None and self.services.journaled:
            results = {k: v for k, v in results.items() if not k.startswith(JOURNAL_PREFIX)}
        if keyring is not None:
            return _OpenedResults(results, keyring)
        return types.MappingProxyType(results)

    @property
    def State(self) -> StateT:
        """The current state: an instance of the State model (a dict without one). It is
        read-only: assigning a field raises, since the change would be lost; change
        state with `SetState`."""
        view = self._state_view
        if view is None:
            merged = {**self._state, **self.state_patch}
            model = self._state_model
            if self.rules.sealed_state:
                merged = open_secrets(merged, self.rules.keyring)
            view = self._state_view = (
                _state_instance(
                    model, merged, run_id=self.RunId, step=self.StepName, read_only=True
                )
                if model is not None
                else _ReadOnlyState(merged)
            )
        state: StateT = view
        return state

    def SetState(self, patch: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Update some state fields: `ctx.SetState(artifact="out.tar")` or
        `ctx.SetState({"artifact": "out.tar"})`.

        The patch is validated against the State model now, so a bad value fails this
        step, not a later one; so is its size (all this step's changes together, at
        most the workflow's `Limits.state_patch`). Changes are stored with the step's
        checkpoint.
        """
        update = {**patch, **fields} if patch else fields  # keyword names are strings
        if patch and not all(isinstance(k, str) for k in update):
            raise StateValidationError(
                f"SetState keys are field names, got {list(update)!r}",
                run_id=self.RunId,
                step=self.StepName,
            )
        model = self._state_model
        if model is not None and not update.keys() <= _field_names(model):
            unknown = sorted(update.keys() - _field_names(model))
            if model.model_config.get("extra") != "allow":
                raise StateValidationError(
                    f"SetState in step {self.StepName!r} of run {self.RunId!r}: "
                    f"{model.__name__} has no field {unknown[0]!r}; fields: "
                    f"{sorted(model.model_fields)}",
                    run_id=self.RunId,
                    step=self.StepName,
                )
        merged = {**self._state, **self.state_patch, **update}
        model = self._state_model
        if model is None:
            for key, value in update.items():
                if type(value) not in _SCALARS and type(value) is not str:
                    merged[key] = to_json_value(
                        value,
                        what=f"state field {key!r}",
                        run_id=self.RunId,
                        step=self.StepName,
                        keyring=self.rules.keyring,
                    )
            view: Any = _ReadOnlyState(merged)
            validated = merged
        else:
            sealed = self.rules.sealed_state
            if sealed:
                merged = open_secrets(merged, self.rules.keyring)
            # Validated once: the instance is also what `ctx.State` returns next. Its JSON
            # form comes from pydantic's serializer directly: `model_dump` would cost
            # 3.6 % of a step (5,400 of 152,000 instructions).
            view = _state_instance(
                model, merged, run_id=self.RunId, step=self.StepName, read_only=True
            )
            validated = model.__pydantic_serializer__.to_python(view, mode="json")
            if sealed:  # pydantic masks secrets in JSON: seal them instead
                refuse = _refuse(self.RunId, self.StepName)
                validated = seal_model(view, validated, self.rules.keyring, refuse)
        # The size is checked before the patch is kept (a step that catches the error
        # stores nothing of it), measured only when a cheap upper bound does not settle
        # it: texts and numbers count at their largest, six bytes a character.
        bound = self._patch_bound
        for key, value in update.items():
            kind = type(value)
            if kind in _SCALARS:
                bound += 6 * len(key) + 32
            elif kind is str:
                bound += 6 * (len(key) + len(value)) + 6
            else:
                bound = _UNKNOWN
                break
        patch = self.state_patch
        limits = self.rules.limits
        if bound > limits.state_patch:
            limits.check(
                "state_patch",
                {**patch, **{key: validated.get(key, update[key]) for key in update}},
                what=f"the state patch of step {self.StepName!r} in run {self.RunId!r}",
                run_id=self.RunId,
                step=self.StepName,
            )
        self._patch_bound = bound
        for key in update:
            patch[key] = validated.get(key, update[key])
        self._state_view = view

    def Log(self, message: str, **data: Any) -> None:
        """Record a message in the run's timeline (with this step's checkpoint). Secret
        values and values named like secrets (`password=...`) are redacted."""
        entry = {"message": str(message), **data}
        if isinstance(self.log_entries, list):
            self.log_entries.append(entry)
        else:
            self.log_entries = [entry]
        logger.info("%s/%s: %s", self.RunId, self.StepName, message)

    def __repr__(self) -> str:
        return f"Context(run={self.RunId!r}, step={self.StepName!r}, attempt={self.Attempt})"

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    decision = Decision
    step_results = StepResults
    state = State
    set_state = SetState
    log = Log

    @property
    def input(self) -> InputT:
        """`Input`."""
        return self.Input

    @property
    def run_id(self) -> str:
        """`RunId`."""
        return self.RunId

    @property
    def step_name(self) -> str:
        """`StepName`."""
        return self.StepName

    @property
    def attempt(self) -> int:
        """`Attempt`."""
        return self.Attempt

    @property
    def idempotency_key(self) -> str:
        """`IdempotencyKey`."""
        return self.IdempotencyKey

    agents = Agents
    emit = Emit


class _OpenedResults(Mapping[str, Any]):
    """Step results whose sealed secrets are opened as each is read."""

    def __init__(self, results: Mapping[str, Any], keyring: Keyring) -> None:
        self._results = results
        self._keyring = keyring

    def __getitem__(self, name: str) -> Any:
        return open_secrets(self._results[name], self._keyring)

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)
