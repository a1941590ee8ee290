"""A batch of 50 documents, summarised one by one: paused, resumed, and its worker
killed halfway, with no document summarised twice once its summary was recorded.

    python examples/document_batch.py work          # a worker (run one, kill it, run another)
    python examples/document_batch.py start RUN_ID  # queue the batch
    python examples/document_batch.py pause RUN_ID  # ... and from anywhere:
    python examples/document_batch.py resume RUN_ID
    python examples/document_batch.py wait RUN_ID   # the result, once it is done

The workflow is one function (`@workflow()`): each `ctx.Task` is checkpointed as it
completes, so a paused batch stops at the next document boundary, and a batch whose
worker died continues on another worker from the first document without a recorded
summary. The worker's leases are short (`lease_ttl=2`), so a dead worker's batch is
taken over two seconds after its last heartbeat. Every command but `work` uses a
`SyncClient` and the store alone (`HOLON_STORE`, by default `.holon/holon.db`).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from holon import ExecuteContext, RunStatus, SyncClient, Worker, workflow
from holon.stores import default_store_url

DOCUMENTS = [f"doc-{i:02d}" for i in range(1, 51)]
WORK_SECONDS = 0.2
"""How long summarising one document takes here (a model call, in real life)."""


async def summarise(document: str) -> str:
    await anyio.sleep(WORK_SECONDS)
    print(f"summarised {document}", flush=True)
    return f"{document}: three key points"


@workflow()
async def document_batch(ctx: ExecuteContext[Any, Any], documents: list[str]) -> dict[str, Any]:
    """Summarise every document of a batch."""
    summaries = [await ctx.Task(summarise, document) for document in documents]
    return {"summarised": len(summaries), "last": summaries[-1]}


async def work() -> None:
    async with Worker(document_batch, default_store_url(), lease_ttl=2.0, poll_interval=0.1):
        print("worker ready", flush=True)
        await anyio.sleep_forever()


def command(verb: str, run_id: str) -> None:
    with SyncClient(default_store_url()) as client:
        if verb == "start":
            handle = client.start("document_batch", {"documents": DOCUMENTS}, run_id=run_id)
            print(f"started {handle.run_id}")
            return
        handle = client.get(run_id)
        if verb == "pause":
            handle.pause(by="ops")
            record = handle.wait_until(RunStatus.PAUSED, timeout=30)
            print(f"paused after {len(record.results)} documents")
        elif verb == "resume":
            print(f"resumed: {handle.resume(by='ops').value}")
        else:
            print(f"result: {handle.result(timeout=120)}")


def main(argv: list[str]) -> None:
    if argv == ["work"]:
        anyio.run(work)
    elif len(argv) == 2 and argv[0] in ("start", "pause", "resume", "wait"):
        command(argv[0], argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
