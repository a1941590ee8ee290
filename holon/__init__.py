"""holon: durable workflows of AI agents, tools and people.

```python
from holon import Workflow, WorkflowRunner, START, END

wf = Workflow("hello").Flow({START: lambda ctx: "Greet", "Greet": lambda ctx: END})
async with WorkflowRunner(wf) as runner:
    handle = await runner.Run()
    await handle.Result()
```
"""

from holon.builder import StepSpec, Workflow
from holon.clock import Clock, ManualClock, SystemClock
from holon.context import Context
from holon.directives import END, START, HumanApproval, Next, Parallel, Wait, WaitCondition
from holon.errors import (
    CorruptRecord,
    HolonError,
    InputValidationError,
    InvalidRunState,
    NotAnApprover,
    NotWaiting,
    RunFailed,
    RunNotFound,
    SeqConflict,
    StaleLease,
    StateValidationError,
    StepOutputError,
    StoreError,
    UnknownStepError,
    ValidationError,
    WorkflowDefinitionError,
)
from holon.handle import RunHandle
from holon.runner import WorkflowRunner
from holon.stores import MemoryStore, SQLiteStore, Store, open_store
from holon.stores.base import RunRecord, RunStatus, RunSummary, TimelineEvent, WaitRecord

__version__ = "0.1.0"

__all__ = [
    "END",
    "START",
    "Clock",
    "Context",
    "CorruptRecord",
    "HolonError",
    "HumanApproval",
    "InputValidationError",
    "InvalidRunState",
    "ManualClock",
    "MemoryStore",
    "Next",
    "NotAnApprover",
    "NotWaiting",
    "Parallel",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "SQLiteStore",
    "SeqConflict",
    "StaleLease",
    "StateValidationError",
    "StepOutputError",
    "StepSpec",
    "Store",
    "StoreError",
    "SystemClock",
    "TimelineEvent",
    "UnknownStepError",
    "ValidationError",
    "Wait",
    "WaitCondition",
    "WaitRecord",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowRunner",
    "__version__",
    "open_store",
]
