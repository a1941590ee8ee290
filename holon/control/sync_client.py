"""`SyncClient`: the `Client` with blocking methods, for scripts and notebooks.

```python
with SyncClient("sqlite:///.holon/holon.db") as client:
    result = client.run("orders", {"order_id": "A-1"})   # waits for a worker to finish it
    handle = client.get(run_id)
    handle.approve("alice")
```

The client's event loop runs in a thread of its own (an anyio blocking portal), so
the methods can be called from code that has no event loop, or from a notebook whose
loop is already running. Every call goes through that loop; closing the client (or
leaving `with`) stops it, after which the client and its handles refuse to act.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from holon._naming import snake_case_aliases
from holon.clock import Clock
from holon.control.bulk import BulkReport
from holon.control.catalogue import WorkflowInfo
from holon.control.client import Client
from holon.control.handle import RunHandle
from holon.control.steward import Steward
from holon.control.surgery import ReplayReport, RerunReport
from holon.definition.budget import Budget
from holon.definition.builder import Workflow
from holon.runtime.waits import WaitInfo
from holon.stores.base import Page, RunRecord, RunStatus, RunSummary, Store, TimelineEvent

__all__ = ["SyncClient", "SyncRunHandle"]

P = ParamSpec("P")
T = TypeVar("T")


@snake_case_aliases
class SyncClient:
    """A `Client` whose methods block until done. Arguments as for `Client`; a store
    given as an object must not be used by another event loop (give a URL)."""

    def __init__(
        self,
        store: Store | str | Steward | None = None,
        *,
        workflows: Iterable[Workflow] = (),
        key_prefix: str = "",
        poll_interval: float = 0.2,
        lease_ttl: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.client = Client(
            store,
            workflows=workflows,
            key_prefix=key_prefix,
            poll_interval=poll_interval,
            lease_ttl=lease_ttl,
            clock=clock,
        )
        self._stack = ExitStack()
        self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        try:
            self._stack.enter_context(self._portal.wrap_async_context_manager(self.client))
        except BaseException:
            self._stack.close()
            raise

    def __repr__(self) -> str:
        return f"Sync{self.client!r}"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.Close()

    def Close(self) -> None:
        """Close the client and stop its thread (leaving `with` does this)."""
        if not self.client.closed:
            self._stack.close()

    def _call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the client's loop and wait for it."""
        self.client.check_open()
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    def _handle(self, handle: RunHandle) -> SyncRunHandle:
        return SyncRunHandle(self, handle)

    # -- the client's verbs --------------------------------------------------------------

    def Start(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        started_by: str | None = None,
    ) -> SyncRunHandle:
        """Start a run of the catalogued workflow by name (see `Client.Start`)."""
        handle = self._call(
            self.client.Start,
            workflow,
            input,
            version=version,
            run_id=run_id,
            started_by=started_by,
        )
        return self._handle(handle)

    def Run(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        started_by: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a run and wait for its result (`RunFailed` if it ends otherwise)."""
        return self._call(
            self.client.Run,
            workflow,
            input,
            version=version,
            run_id=run_id,
            started_by=started_by,
            timeout=timeout,
        )

    def Get(self, run_id: str) -> SyncRunHandle:
        """The handle of any run in the store; `RunNotFound` if there is none."""
        return self._handle(self._call(self.client.Get, run_id))

    def List(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        """Runs in the store, newest first, a page at a time."""
        return self._call(self.client.List, status, workflow, limit=limit, cursor=cursor)

    def Workflows(self, tag: str | None = None) -> list[WorkflowInfo]:
        """The latest version of every catalogued workflow."""
        return self._call(self.client.Workflows, tag)

    def Describe(self, workflow: str, version: str | None = None) -> dict[str, Any]:
        """What the catalogue knows of a workflow version."""
        return self._call(self.client.Describe, workflow, version)

    def Pending(
        self,
        approver: str,
        roles: Iterable[str] = (),
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[WaitInfo]:
        """The approvals `approver` can act on now."""
        return self._call(self.client.Pending, approver, roles, limit=limit, cursor=cursor)

    def Send(self, event: str, payload: Any = None, event_id: str | None = None) -> list[str]:
        """Deliver `event` to every run waiting on it; returns the ids reached."""
        return self._call(self.client.Send, event, payload, event_id)

    def Bulk(
        self,
        verb: str,
        *,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        version: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        by: str | None = None,
    ) -> BulkReport:
        """Apply a verb to every run matching the filter (see `Client.Bulk`)."""
        return self._call(
            self.client.Bulk,
            verb,
            workflow=workflow,
            status=status,
            version=version,
            started_after=started_after,
            started_before=started_before,
            by=by,
        )

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    close = Close
    start = Start
    run = Run
    get = Get
    list = List
    workflows = Workflows
    describe = Describe
    pending = Pending
    send = Send
    bulk = Bulk


@snake_case_aliases
class SyncRunHandle:
    """A `RunHandle` whose methods block; see `RunHandle` for what each does."""

    def __init__(self, client: SyncClient, handle: RunHandle) -> None:
        self._client = client
        self.handle = handle
        self.run_id = handle.run_id
        self.RunId = handle.run_id

    def __repr__(self) -> str:
        return f"SyncRunHandle({self.run_id!r})"

    def _call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._client._call(fn, *args, **kwargs)

    def Status(self) -> RunStatus:
        return self._call(self.handle.Status)

    def Record(self) -> RunRecord:
        return self._call(self.handle.Record)

    def Result(self, timeout: float | None = None) -> Any:
        return self._call(self.handle.Result, timeout)

    def WaitUntil(self, *statuses: RunStatus | str, timeout: float | None = None) -> RunRecord:
        return self._call(self.handle.WaitUntil, *statuses, timeout=timeout)

    def Pause(self, by: str | None = None) -> RunStatus:
        return self._call(self.handle.Pause, by)

    def Resume(
        self,
        goto: str | None = None,
        state: Mapping[str, Any] | None = None,
        by: str | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> RunStatus:
        return self._call(self.handle.Resume, goto, state, by, budget)

    def Stop(self, by: str | None = None, timeout: float | None = None) -> RunStatus:
        return self._call(self.handle.Stop, by, timeout)

    def Approve(
        self,
        by: str,
        comment: str | None = None,
        digest: str | None = None,
        *,
        roles: Iterable[str] = (),
        wait_id: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> RunStatus:
        return self._call(
            self.handle.Approve, by, comment, digest, roles=roles, wait_id=wait_id, args=args
        )

    def Reject(
        self,
        by: str,
        comment: str | None = None,
        digest: str | None = None,
        *,
        roles: Iterable[str] = (),
        wait_id: str | None = None,
    ) -> RunStatus:
        return self._call(self.handle.Reject, by, comment, digest, roles=roles, wait_id=wait_id)

    def Answer(
        self, value: Any, by: str, comment: str | None = None, *, wait_id: str | None = None
    ) -> RunStatus:
        return self._call(self.handle.Answer, value, by, comment, wait_id=wait_id)

    def Send(self, event: str, payload: Any = None, event_id: str | None = None) -> RunStatus:
        return self._call(self.handle.Send, event, payload, event_id)

    def Retry(
        self,
        goto: str | None = None,
        state: Mapping[str, Any] | None = None,
        by: str | None = None,
    ) -> RunStatus:
        return self._call(self.handle.Retry, goto, state, by)

    def Rerun(self, step: str, seq: int | None = None) -> RerunReport:
        return self._call(self.handle.Rerun, step, seq)

    def Replay(self, by: str | None = None) -> ReplayReport:
        return self._call(self.handle.Replay, by)

    def Fork(
        self, at: int, state: Mapping[str, Any] | None = None, by: str | None = None
    ) -> SyncRunHandle:
        return SyncRunHandle(self._client, self._call(self.handle.Fork, at, state, by))

    def Waiting(self) -> WaitInfo | None:
        return self._call(self.handle.Waiting)

    def Timeline(self, after: int = 0) -> list[TimelineEvent]:
        return self._call(self.handle.Timeline, after)

    def Watch(self, after: int = 0, timeout: float | None = None) -> Iterator[TimelineEvent]:
        """Timeline events as they happen, until the run ends (see `RunHandle.Watch`)."""
        events = self.handle.Watch(after, timeout, emitted=False)
        try:
            while True:
                try:
                    event = self._call(events.__anext__)
                except StopAsyncIteration:
                    return
                yield event
        finally:
            close = getattr(events, "aclose", None)  # an async generator: let it clean up
            if close is not None and not self._client.client.closed:
                self._call(close)

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    status = Status
    record = Record
    result = Result
    wait_until = WaitUntil
    pause = Pause
    resume = Resume
    stop = Stop
    approve = Approve
    reject = Reject
    answer = Answer
    send = Send
    retry = Retry
    rerun = Rerun
    replay = Replay
    fork = Fork
    waiting = Waiting
    timeline = Timeline
    watch = Watch
