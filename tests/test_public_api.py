"""The public surface is deliberate: this test pins it."""

from __future__ import annotations

import holon
from holon._naming import to_snake_case


def test_exports_are_pinned() -> None:
    assert sorted(holon.__all__) == sorted(
        [
            "Agent",
            "AgentHandle",
            "AgentNotFound",
            "Budget",
            "Emitted",
            "END",
            "START",
            "Child",
            "End",
            "BulkReport",
            "Client",
            "Divergence",
            "NoRecording",
            "ReplayReport",
            "RerunReport",
            "ObservedStore",
            "RunSpans",
            "WebhookRoute",
            "install_log_context",
            "Clock",
            "Context",
            "ChildFailed",
            "CorruptRecord",
            "DecisionConflict",
            "DecisionRefused",
            "DigestMismatch",
            "Event",
            "HolonError",
            "HumanApproval",
            "HumanInput",
            "InboxFull",
            "InputValidationError",
            "InvalidAnswer",
            "InvalidRunState",
            "ManualClock",
            "MemoryStore",
            "Next",
            "NotAnApprover",
            "NotWaiting",
            "PoisonRun",
            "Page",
            "Parallel",
            "ResultTimeout",
            "RunConflict",
            "RunFailed",
            "RunHandle",
            "RunNotFound",
            "RunRecord",
            "RunStatus",
            "RunSummary",
            "SQLiteStore",
            "SeqConflict",
            "Sleep",
            "StaleLease",
            "StateReadOnly",
            "StateValidationError",
            "StepOutputError",
            "StepSpec",
            "Store",
            "StoreError",
            "SystemClock",
            "TimelineEvent",
            "UnknownStepError",
            "Until",
            "ValidationError",
            "ValueTooLarge",
            "Limits",
            "Retention",
            "Keyring",
            "Secret",
            "SecretKeyError",
            "Wait",
            "WaitCondition",
            "WaitInfo",
            "WaitRecord",
            "Workflow",
            "WorkflowDefinitionError",
            "WorkflowRunner",
            "Worker",
            "DocumentError",
            "Steward",
            "SyncClient",
            "SyncRunHandle",
            "WorkflowInfo",
            "WorkflowNotFound",
            "__version__",
            "ExecuteContext",
            "NonDeterminismError",
            "NonRetryable",
            "Retry",
            "StepTimeout",
            "TaskCall",
            "TaskState",
            "current_step",
            "step",
            "configure_worker_gc",
            "workflow",
            "open_store",
            "payload_digest",
        ]
    )
    for name in holon.__all__:
        assert hasattr(holon, name), name


def test_every_error_derives_from_holon_error() -> None:
    for name in holon.__all__:
        value = getattr(holon, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, holon.HolonError), name


def test_every_pascal_case_verb_has_its_snake_case_alias() -> None:
    for cls in (
        holon.Workflow,
        holon.WorkflowRunner,
        holon.RunHandle,
        holon.Context,
        holon.ExecuteContext,
        holon.Steward,
        holon.Client,
        holon.SyncClient,
        holon.Client,
        holon.SyncClient,
        holon.SyncRunHandle,
    ):
        verbs = [n for n in dir(cls) if n[:1].isupper() and callable(getattr(cls, n))]
        assert verbs, cls
        for verb in verbs:
            assert getattr(cls, to_snake_case(verb)) is getattr(cls, verb), (cls, verb)


def test_snake_case_conversion() -> None:
    assert to_snake_case("SetState") == "set_state"
    assert to_snake_case("IdempotencyKey") == "idempotency_key"
    assert to_snake_case("WaitUntil") == "wait_until"
