"""Declarative workflows: a YAML or JSON document compiled to the same graph as the DSL.

```yaml
name: Deploy Application
steps:
  - name: Run Tests
    agent: test-runner
  - name: Build Docker Image
    agent: builder
    retry: {attempts: 3, initial_delay: 2s}
  - name: Deploy to Production
    agent: deployer
    requires: [Run Tests, Build Docker Image]
    approval: {approvers: [ops-lead]}
    timeout: 10m
```

Steps run in the order written unless they say otherwise: a step without `requires`
follows the step above it (the first follows every step of `parallel:`, which all start
at once). `requires: [...]` names exactly the steps it waits for, so steps that require
nothing in common run concurrently. The dependencies are laid out in stages, each stage
holding the steps whose requirements are met by the stages before it; a stage of one
step is a plain step, a stage of several is a `Parallel` fan-out joined before the next
stage. A step with `approval:` waits for that approval before it runs. Compiler-added
steps are named `fan-out N`, `fan-in` and `approve: STEP`.

Each step calls an agent (`agent:`, registered with `Steward.RegisterAgent`) or a
function (`task:`, `Steward.RegisterTask`) with the step's `ctx`; the value returned is
the step's result in `ctx.StepResults`. The run's result is the last stage's: the
last step's result, or `{step: result}` when the last stage runs several.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from holon.definition._document import FieldPath, Lines, field_name, read_document
from holon.definition.builder import Workflow
from holon.definition.directives import END, START, HumanApproval, Next, Parallel, Wait
from holon.definition.policies import Retry, step
from holon.errors import DocumentError, WorkflowDefinitionError

__all__ = ["Compiled", "compile_document"]

Call = Callable[[str, str], Callable[..., Any]]
"""`call(kind, name)`: the function a step runs for `agent: name` or `task: name`."""

_TOP_FIELDS = ("description", "name", "owner", "parallel", "steps", "tags", "trigger", "version")
_STEP_FIELDS = ("agent", "approval", "description", "name", "requires", "retry", "task", "timeout")
_RETRY_FIELDS = ("attempts", "backoff", "initial_delay", "jitter", "max_delay")
_APPROVAL_FIELDS = ("approvers", "min_approvals", "question")
_TRIGGER_FIELDS = {"webhook": ("path", "source", "type"), "schedule": ("cron", "every", "type")}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")


@dataclass
class Compiled:
    """A compiled document: the workflow, and what the catalogue shows of it."""

    workflow: Workflow
    document: dict[str, Any]
    triggers: list[dict[str, Any]]
    details: dict[str, dict[str, Any]]
    """Per step: its `agent`/`task`, `requires`, `retry`, `timeout`, `approval`, or the
    `role` of a compiler-added step."""
    owner: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class _Step:
    name: str
    path: FieldPath
    kind: str
    ref: str
    requires: list[tuple[str, FieldPath]] | None
    retry: Retry | None = None
    retry_json: Any = None
    timeout: float | None = None
    approval: HumanApproval | None = None


class _Checker:
    def __init__(self, lines: Lines) -> None:
        self.lines = lines
        self.workflow: str | None = None

    def fail(self, path: FieldPath, message: str) -> DocumentError:
        line = self.lines.of(path)
        name = field_name(path)
        where = f"line {line}, field {name}" if line is not None else f"field {name}"
        prefix = f"workflow {self.workflow!r}, " if self.workflow else ""
        return DocumentError(f"{prefix}{where}: {message}", line=line, field=name)

    def mapping(self, value: Any, path: FieldPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of {', '.join(allowed)}, got {value!r}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    (*path, key), f"unknown field {key!r}; fields: {', '.join(allowed)}"
                )
        return value

    def text(self, value: Any, path: FieldPath, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"{what} must be a non-empty string, got {value!r}")
        return value

    def strings(self, value: Any, path: FieldPath, what: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(path, f"{what} must be a list of strings, got {value!r}")
        return [self.text(item, (*path, i), f"each of {what}") for i, item in enumerate(value)]

    def duration(self, value: Any, path: FieldPath, what: str, *, zero: bool = False) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        else:
            raise self.fail(
                path, f"{what} is seconds or a duration like 30s, 5m, 2h, got {value!r}"
            )
        if seconds < 0 or (seconds == 0 and not zero):
            raise self.fail(path, f"{what} must be {'>= 0' if zero else 'positive'}, got {value!r}")
        return seconds


def compile_document(
    document: str | bytes | Path | Mapping[str, Any],
    *,
    agents: Mapping[str, Any],
    tasks: Mapping[str, Any],
    call: Call,
) -> Compiled:
    """Compile a document into a `Workflow`, checking every field and reference.

    Args:
        document: YAML or JSON text, a file, or a dict.
        agents: the names of registered agents (a mapping keyed by name).
        tasks: the names of registered task functions.
        call: gives the function a step runs, when it runs.

    Raises `DocumentError` naming the line and field at fault.
    """
    value, lines = read_document(document)
    check = _Checker(lines)
    doc = check.mapping(value, (), _TOP_FIELDS)
    if "name" not in doc:
        raise check.fail((), "a workflow needs a name")
    name = check.text(doc["name"], ("name",), "name")
    check.workflow = name
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise check.fail(("description",), f"description must be a string, got {description!r}")
    version = None
    if "version" in doc:
        raw = doc["version"]
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
        version = check.text(raw, ("version",), "version")
    owner = check.text(doc["owner"], ("owner",), "owner") if "owner" in doc else None
    tags = check.strings(doc["tags"], ("tags",), "tags") if "tags" in doc else []
    steps = _read_steps(check, doc, agents, tasks)
    triggers = _read_triggers(check, doc.get("trigger"))
    stages = _stages(check, steps)
    flow, details = _flow(check, steps, stages, call)
    normalized = json.loads(json.dumps(doc))
    if version is None:
        digest = hashlib.sha256(json.dumps(normalized, sort_keys=True).encode())
        version = digest.hexdigest()[:12]
    try:
        workflow = Workflow(name, description, version=version).Flow(flow)
    except WorkflowDefinitionError as exc:  # pragma: no cover - the checks above come first
        raise check.fail(("steps",), exc.message) from None
    return Compiled(workflow, normalized, triggers, details, owner, tags)


def _read_steps(
    check: _Checker, doc: dict[str, Any], agents: Mapping[str, Any], tasks: Mapping[str, Any]
) -> list[_Step]:
    sections = [s for s in ("parallel", "steps") if s in doc]
    if not sections:
        raise check.fail((), "a workflow needs steps: (run in order) or parallel: (run at once)")
    steps: list[_Step] = []
    seen: dict[str, FieldPath] = {}
    for section in sections:
        entries = doc[section]
        if not isinstance(entries, list) or not entries:
            raise check.fail((section,), f"{section} must be a non-empty list of steps")
        for index, raw in enumerate(entries):
            path: FieldPath = (section, index)
            entry = check.mapping(raw, path, _STEP_FIELDS)
            if "name" not in entry:
                raise check.fail(path, "a step needs a name")
            name = check.text(entry["name"], (*path, "name"), "a step's name")
            if name in seen:
                raise check.fail(
                    (*path, "name"),
                    f"step {name!r} is named twice (first at {field_name(seen[name])})",
                )
            seen[name] = path
            steps.append(_read_step(check, entry, path, name, agents, tasks))
    return steps


def _read_step(
    check: _Checker,
    entry: dict[str, Any],
    path: FieldPath,
    name: str,
    agents: Mapping[str, Any],
    tasks: Mapping[str, Any],
) -> _Step:
    kinds = [k for k in entry if k in ("agent", "task")]
    if len(kinds) != 1:
        raise check.fail(
            path if not kinds else (*path, kinds[1]),
            f"step {name!r} names one agent: or one task:, not {' and '.join(kinds) or 'neither'}",
        )
    kind = kinds[0]
    ref = check.text(entry[kind], (*path, kind), f"step {name!r}'s {kind}")
    registered = agents if kind == "agent" else tasks
    if ref not in registered:
        raise check.fail(
            (*path, kind),
            f"step {name!r}: unknown {kind} {ref!r}; registered {kind}s: "
            f"{', '.join(sorted(registered)) or 'none'}",
        )
    requires = None
    if "requires" in entry:
        if path[0] == "parallel":
            raise check.fail(
                (*path, "requires"), "parallel steps start at once; requires: belongs in steps:"
            )
        names = check.strings(entry["requires"], (*path, "requires"), "requires")
        requires = [(n, (*path, "requires", i)) for i, n in enumerate(names)]
    result = _Step(name=name, path=path, kind=kind, ref=ref, requires=requires)
    if "retry" in entry:
        result.retry, result.retry_json = _read_retry(check, entry["retry"], (*path, "retry"))
    if "timeout" in entry:
        result.timeout = check.duration(entry["timeout"], (*path, "timeout"), "timeout")
    if "approval" in entry:
        result.approval = _read_approval(check, entry["approval"], (*path, "approval"))
    return result


def _read_retry(check: _Checker, value: Any, path: FieldPath) -> tuple[Retry, Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"attempts": value}
    options = check.mapping(value, path, _RETRY_FIELDS)
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        where = (*path, key)
        if key == "attempts":
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
                raise check.fail(where, f"attempts must be a whole number >= 1, got {raw!r}")
            kwargs[key] = raw
        elif key == "jitter":
            if not isinstance(raw, bool):
                raise check.fail(where, f"jitter must be true or false, got {raw!r}")
            kwargs[key] = raw
        elif key == "backoff":
            if not isinstance(raw, int | float) or isinstance(raw, bool) or raw < 1:
                raise check.fail(where, f"backoff must be a number >= 1, got {raw!r}")
            kwargs[key] = float(raw)
        else:
            kwargs[key] = check.duration(raw, where, key, zero=True)
    return Retry(**kwargs), options


def _read_approval(check: _Checker, value: Any, path: FieldPath) -> HumanApproval:
    options = check.mapping(value, path, _APPROVAL_FIELDS)
    if "approvers" not in options:
        raise check.fail(path, "an approval needs approvers: [...]")
    approvers = check.strings(options["approvers"], (*path, "approvers"), "approvers")
    question = options.get("question")
    if question is not None and not isinstance(question, str):
        raise check.fail((*path, "question"), f"question must be a string, got {question!r}")
    minimum = options.get("min_approvals", 1)
    try:
        return HumanApproval(approvers=approvers, min_approvals=minimum, question=question)
    except (TypeError, ValueError) as exc:
        at = (*path, "min_approvals") if "min_approvals" in options else (*path, "approvers")
        raise check.fail(at, str(exc)) from None


def _read_triggers(check: _Checker, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    entries = value if isinstance(value, list) else [value]
    triggers = []
    for index, raw in enumerate(entries):
        path: FieldPath = ("trigger", index) if isinstance(value, list) else ("trigger",)
        if not isinstance(raw, dict) or "type" not in raw:
            raise check.fail(path, "a trigger is a mapping with type: webhook or type: schedule")
        kind = raw["type"]
        if kind not in _TRIGGER_FIELDS:
            raise check.fail(
                (*path, "type"), f"unknown trigger type {kind!r}; types: webhook, schedule"
            )
        options = check.mapping(raw, path, _TRIGGER_FIELDS[kind])
        trigger: dict[str, Any] = {"type": kind}
        if kind == "webhook":
            for key in ("source", "path"):
                if key in options:
                    trigger[key] = check.text(options[key], (*path, key), key)
            if "path" in trigger and not trigger["path"].startswith("/"):
                raise check.fail(
                    (*path, "path"), f"path must start with /, got {trigger['path']!r}"
                )
        else:
            given = [k for k in ("cron", "every") if k in options]
            if len(given) != 1:
                raise check.fail(path, "a schedule has one of cron: or every:")
            if given[0] == "every":
                trigger["every"] = check.duration(options["every"], (*path, "every"), "every")
            else:
                cron = check.text(options["cron"], (*path, "cron"), "cron")
                _check_cron(check, cron, (*path, "cron"))
                trigger["cron"] = cron
        triggers.append(trigger)
    return triggers


def _check_cron(check: _Checker, cron: str, path: FieldPath) -> None:
    fields = cron.split()
    if len(fields) != 5:
        raise check.fail(
            path, f"cron has five fields (minute hour day month weekday), got {cron!r}"
        )
    for text, (low, high), what in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        for part in text.split(","):
            base, _, step_text = part.partition("/")
            numbers = [] if base == "*" else base.split("-")
            if (
                (step_text and not step_text.isdigit())
                or len(numbers) > 2
                or not all(n.isdigit() and low <= int(n) <= high for n in numbers)
            ):
                raise check.fail(
                    path, f"cron {what} field {text!r} is not valid ({low}-{high}, *, /, -, ,)"
                )


def _stages(check: _Checker, steps: list[_Step]) -> list[list[_Step]]:
    """Group steps into stages by their requirements; refuse unknown names and cycles."""
    by_name = {s.name: s for s in steps}
    parallel = [s.name for s in steps if s.path[0] == "parallel"]
    deps: dict[str, list[tuple[str, FieldPath]]] = {}
    previous: str | None = None
    for s in steps:
        if s.requires is not None:
            for name, path in s.requires:
                if name not in by_name:
                    raise check.fail(
                        path,
                        f"step {s.name!r} requires {name!r}, which is not a step; steps: "
                        f"{', '.join(by_name)}",
                    )
            deps[s.name] = s.requires
        elif s.path[0] == "parallel":
            deps[s.name] = []
        elif previous is not None:
            deps[s.name] = [(previous, s.path)]
        else:
            deps[s.name] = [(p, s.path) for p in parallel]
        if s.path[0] == "steps":
            previous = s.name
    level: dict[str, int] = {}
    visiting: list[tuple[str, FieldPath]] = []  # each step, and the field that led to it

    def visit(name: str, via: FieldPath) -> int:
        if name in level:
            return level[name]
        visiting.append((name, via))
        deepest = -1
        for dep, path in deps[name]:
            names = [n for n, _ in visiting]
            if dep in names:
                loop = visiting[names.index(dep) + 1 :]
                cycle = [*names[names.index(dep) :], dep]
                # Blame a `requires` entry, the thing to change, before an implied order.
                fields = [p for _, p in loop] + [path]
                blamed = next((p for p in fields if "requires" in p), path)
                raise check.fail(blamed, f"requires forms a cycle: {' -> '.join(cycle)}")
            deepest = max(deepest, visit(dep, path))
        visiting.pop()
        level[name] = deepest + 1
        return level[name]

    for s in steps:
        visit(s.name, s.path)
    stages: list[list[_Step]] = [[] for _ in range(max(level.values()) + 1)]
    for s in steps:
        stages[level[s.name]].append(s)
    return stages


def _flow(
    check: _Checker, steps: list[_Step], stages: list[list[_Step]], call: Call
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The flow dict (as written by hand with the DSL) and each step's details."""
    flow: dict[str, Any] = {}
    details: dict[str, dict[str, Any]] = {}
    taken = {s.name: s.path for s in steps}

    def claim(name: str, role: dict[str, Any]) -> str:
        if name in taken:
            raise check.fail((*taken[name], "name"), f"step name {name!r} is used by the compiler")
        details[name] = role
        return name

    # Each stage is entered by its approval gates, in order, then its step or fan-out.
    gates: dict[str, _Step] = {}
    leads: list[list[str]] = []
    for number, stage in enumerate(stages, start=1):
        chain = []
        for s in stage:
            if s.approval is not None:
                gate = claim(f"approve: {s.name}", {"role": "approval", "for": s.name})
                gates[gate] = s
                chain.append(gate)
        if len(stage) == 1:
            chain.append(stage[0].name)
        else:
            branches = [s.name for s in stage]
            chain.append(claim(f"fan-out {number}", {"role": "fan-out", "branches": branches}))
        leads.append(chain)
    last = stages[-1]
    fan_in = None
    if len(last) > 1:
        fan_in = claim("fan-in", {"role": "fan-in", "branches": [s.name for s in last]})

    flow[START.value] = _goto(leads[0][0])
    for index, stage in enumerate(stages):
        after = leads[index + 1][0] if index + 1 < len(stages) else (fan_in or END.value)
        chain = leads[index]
        for gate, following in itertools.pairwise(chain):
            approval = gates[gate].approval
            assert approval is not None
            flow[gate] = _gate(approval, following)
        if len(stage) > 1:
            flow[chain[-1]] = _fan_out([s.name for s in stage], after)
        for s in stage:
            fn = _run_step(s, call, after, branch=len(stage) > 1)
            flow[s.name] = (
                step(fn, retry=s.retry, timeout=s.timeout) if s.retry or s.timeout else fn
            )
            details[s.name] = _details(s)
    if fan_in is not None:
        flow[fan_in] = _fan_in([s.name for s in last])
    return flow, details


def _details(s: _Step) -> dict[str, Any]:
    found: dict[str, Any] = {s.kind: s.ref}
    if s.requires is not None:
        found["requires"] = [n for n, _ in s.requires]
    if s.retry_json is not None:
        found["retry"] = s.retry_json
    if s.timeout is not None:
        found["timeout"] = s.timeout
    if s.approval is not None:
        found["approval"] = s.approval.spec()
    return found


def _returns(fn: Callable[..., Any], targets: list[str]) -> None:
    """Annotate `fn` with the steps it leads to, so the graph and Mermaid show them."""
    fn.__annotations__ = {"return": Literal.__getitem__(tuple(targets))}


def _goto(target: str) -> Callable[..., Any]:
    def start(ctx: Any) -> str:
        return target

    _returns(start, [target])
    return start


def _gate(approval: HumanApproval, following: str) -> Callable[..., Any]:
    def gate(ctx: Any) -> Wait:
        return Wait(approval, following)

    _returns(gate, [following])
    return gate


def _fan_out(branches: list[str], join: str) -> Callable[..., Any]:
    def fan_out(ctx: Any) -> Parallel:
        return Parallel(branches, join)

    _returns(fan_out, branches)
    return fan_out


def _fan_in(branches: list[str]) -> Callable[..., Any]:
    def fan_in(ctx: Any) -> Next:
        return Next(END, output={b: ctx.StepResults.get(b) for b in branches})

    _returns(fan_in, [END.value])
    return fan_in


def _run_step(s: _Step, call: Call, after: str, *, branch: bool) -> Callable[..., Any]:
    async def run(ctx: Any) -> Any:
        value = call(s.kind, s.ref)(ctx)
        if inspect.isawaitable(value):
            value = await value
        return value if branch else Next(after, output=value)

    run.__name__ = run.__qualname__ = s.name
    _returns(run, [after])
    return run
