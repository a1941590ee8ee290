"""Building workflows: immutability, validation errors that name the culprit, Mermaid."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from holon import END, START, Next, Retry, Workflow, WorkflowDefinitionError, step


class Repo(BaseModel):
    repo: str


class Build(BaseModel):
    artifact: str | None = None


def clone(ctx: object) -> Literal["Build"]:
    return "Build"


def build(ctx: object) -> Literal["Test", "Build"]:
    return "Test"


def test_builder_calls_return_new_workflows() -> None:
    base = Workflow("wf", "a workflow")
    typed = base.Input(Repo)
    assert base.input_model is None and typed.input_model is Repo
    assert typed.State(Build).state_model is Build and typed.state_model is None
    with pytest.raises(AttributeError, match="immutable"):
        typed._name = "other"  # type: ignore[misc]


def test_flow_without_start_names_the_fix() -> None:
    with pytest.raises(WorkflowDefinitionError, match="no START entry") as info:
        Workflow("wf").Flow({"A": lambda ctx: END})
    assert info.value.workflow == "wf"


def test_annotation_naming_an_unknown_step_is_refused() -> None:
    def clone_typo(ctx: object) -> Literal["Biuld"]:
        return "Biuld"

    with pytest.raises(WorkflowDefinitionError, match="'Clone' may return 'Biuld'") as info:
        Workflow("wf").Flow({START: clone, "Clone": clone_typo, "Build": build})
    assert info.value.step == "Clone"
    assert "known steps: ['Build', 'Clone']" in str(info.value)


def test_unreachable_step_is_refused_when_every_edge_is_known() -> None:
    def start(ctx: object) -> Literal["Clone"]:
        return "Clone"

    def test(ctx: object) -> Literal[END]:  # type: ignore[valid-type]
        return END

    with pytest.raises(WorkflowDefinitionError, match=r"no step leads to \['Orphan'\]"):
        Workflow("wf").Flow(
            {START: start, "Clone": clone, "Build": build, "Test": test, "Orphan": test}
        )
    # With one unannotated step the graph is open, so nothing can be called unreachable.
    Workflow("wf").Flow(
        {START: lambda ctx: "Clone", "Clone": clone, "Build": build, "Test": test, "Orphan": test}
    )


def test_flow_and_execute_are_exclusive() -> None:
    async def body(ctx: object) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError, match=r"both \.Flow\(\) and \.Execute\(\)"):
        Workflow("wf").Flow({START: lambda ctx: END}).Execute(body)
    with pytest.raises(WorkflowDefinitionError, match=r"both \.Execute\(\) and \.Flow\(\)"):
        Workflow("wf").Execute(body).Flow({START: lambda ctx: END})


@pytest.mark.parametrize("bad", [dict, "Repo", Repo(repo="x"), None])
def test_schemas_must_be_pydantic_models(bad: object) -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"\.Input\(\) takes a pydantic model"):
        Workflow("wf").Input(bad)  # type: ignore[arg-type]


def test_state_model_needs_defaults() -> None:
    with pytest.raises(WorkflowDefinitionError, match="give every field a default"):
        Workflow("wf").State(Repo)


def test_bad_step_values_and_names() -> None:
    with pytest.raises(WorkflowDefinitionError, match="step 'A' is 42"):
        Workflow("wf").Flow({START: lambda ctx: "A", "A": 42})  # type: ignore[dict-item]
    with pytest.raises(WorkflowDefinitionError, match="END is where a flow stops"):
        Workflow("wf").Flow({START: lambda ctx: END, END: lambda ctx: END})
    with pytest.raises(WorkflowDefinitionError, match="non-empty name"):
        Workflow("")


def test_version_is_a_fingerprint_unless_given() -> None:
    steps = {START: clone, "Build": lambda ctx: END}
    a = Workflow("wf").Flow(steps)
    b = Workflow("wf").Flow(dict(steps))
    c = Workflow("wf").Input(Repo).Flow(steps)
    assert a.version == b.version != c.version
    assert Workflow("wf", version="2024-06").version == "2024-06"


def test_mermaid_draws_annotated_edges() -> None:
    def test(ctx: object) -> Literal["Deploy"] | Next:
        return "Deploy"

    def start(ctx: object) -> Literal["Clone"]:
        return "Clone"

    wf = Workflow("wf").Flow(
        {START: start, "Clone": clone, "Build": build, "Test": test, "Deploy": lambda ctx: END}
    )
    chart = wf.Mermaid()
    assert chart.startswith("flowchart TD\n")
    assert 'start(("start"))' in chart and 's0["Clone"]' in chart
    assert "start --> s0" in chart and "s1 --> s2" in chart and "s1 --> s1" in chart
    assert "class s2,s3 open" in chart  # Test may also return Next; Deploy has no annotation
    assert wf.mermaid() == chart  # snake_case alias


def test_the_plan_picks_out_the_steps_without_policies_and_follows_builder_calls() -> None:
    def plain(ctx: object) -> str:
        return END

    class Counter(BaseModel):
        n: int = 0

    wf = Workflow("plan").Flow(
        {START: lambda ctx: "Plain", "Plain": plain, "Patient": step(plain, retry=Retry(3))}
    )
    plan = wf.plan
    assert plan is wf.plan  # worked out once per workflow
    assert set(plan.steps) == {START.value, "Plain", "Patient"}
    assert set(plan.direct) == {START.value, "Plain"}
    assert plan.state_model is None and plan.execute_fn is None

    with_state = wf.State(Counter).Agents({"helper": lambda: object()})
    assert with_state.plan is not plan and with_state.plan.state_model is Counter
    assert set(with_state.plan.agents) == {"helper"}
    # A workflow-wide deadline means no step is called without the policy machinery.
    assert wf.Defaults(timeout=5).plan.direct == {}
    assert set(wf.plan.direct) == {START.value, "Plain"}  # the original is unchanged
