"""holon: durable workflows of AI agents, tools and people.

```python
from holon import Workflow, WorkflowRunner, START, END

wf = Workflow("hello").Flow({START: lambda ctx: "Greet", "Greet": lambda ctx: END})
async with WorkflowRunner(wf) as runner:
    handle = await runner.Run()
    await handle.Result()
```
"""

from holon.clock import Clock, ManualClock, SystemClock
from holon.control.bulk import BulkReport
from holon.control.catalogue import WorkflowInfo
from holon.control.client import Client
from holon.control.handle import RunHandle
from holon.control.observed import ObservedStore
from holon.control.runner import WorkflowRunner
from holon.control.steward import Steward
from holon.control.surgery import Divergence, ReplayReport, RerunReport
from holon.control.sync_client import SyncClient, SyncRunHandle
from holon.control.telemetry import RunSpans
from holon.control.webhooks import WebhookRoute
from holon.definition.budget import Budget
from holon.definition.builder import Workflow
from holon.definition.conditions import payload_digest
from holon.definition.decorator import workflow
from holon.definition.directives import (
    END,
    START,
    Child,
    End,
    Event,
    HumanApproval,
    HumanInput,
    Next,
    Parallel,
    Sleep,
    Until,
    Wait,
    WaitCondition,
)
from holon.definition.policies import NonRetryable, Retry, StepTimeout, step
from holon.definition.steps import StepSpec
from holon.errors import (
    AgentNotFound,
    ChildFailed,
    CorruptRecord,
    DecisionConflict,
    DecisionRefused,
    DigestMismatch,
    DocumentError,
    HolonError,
    InboxFull,
    InputValidationError,
    InvalidAnswer,
    InvalidRunState,
    NonDeterminismError,
    NotAnApprover,
    NotWaiting,
    PoisonRun,
    ResultTimeout,
    RunConflict,
    RunFailed,
    RunNotFound,
    SecretKeyError,
    SeqConflict,
    StaleLease,
    StateReadOnly,
    StateValidationError,
    StepOutputError,
    StoreError,
    UnknownStepError,
    ValidationError,
    ValueTooLarge,
    WorkflowDefinitionError,
    WorkflowNotFound,
)
from holon.limits import Limits
from holon.runtime.agents import Agent, AgentHandle
from holon.runtime.cassette import NoRecording
from holon.runtime.context import Context
from holon.runtime.imperative import ExecuteContext, TaskCall, current_step
from holon.runtime.log_context import install_log_context
from holon.runtime.task_state import TaskState
from holon.runtime.waits import WaitInfo
from holon.sealing import Keyring, Secret
from holon.stores import MemoryStore, SQLiteStore, Store, open_store
from holon.stores.base import (
    Emitted,
    Page,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
    WaitRecord,
)
from holon.stores.retention import Retention
from holon.worker.collector import configure_worker_gc
from holon.worker.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentHandle",
    "AgentNotFound",
    "Budget",
    "Emitted",
    "ObservedStore",
    "RunSpans",
    "WebhookRoute",
    "install_log_context",
    "ExecuteContext",
    "NonDeterminismError",
    "NonRetryable",
    "Retry",
    "StepTimeout",
    "TaskCall",
    "TaskState",
    "current_step",
    "step",
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
    "InputValidationError",
    "InvalidAnswer",
    "InvalidRunState",
    "ManualClock",
    "MemoryStore",
    "Next",
    "NotAnApprover",
    "InboxFull",
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
    "configure_worker_gc",
    "open_store",
    "payload_digest",
    "workflow",
]
