"""An incident: page the on-call engineer, then wait, durably, for the monitoring system
to say the incident is resolved, and write the postmortem's first line.

    python examples/incident.py serve                  # a worker: opens incident INC-7
                                                       # and waits for its result
    python examples/incident.py resolve INC-7 WHO      # anywhere else: the monitoring
                                                       # system's webhook, as an event

The run waits for the event `incident.resolved` whose payload names its incident
(`match={"incident_id": ...}`), holding nothing while it waits; after an hour without
it, it escalates instead. The sender needs only the store (`HOLON_STORE`, by default
`.holon/holon.db`) and the event: `SyncClient.send` reaches every run waiting for it,
and an event sent before the run waits is kept for it.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import anyio
from pydantic import BaseModel

from holon import END, START, Client, Context, Event, Next, SyncClient, Wait, Worker, Workflow
from holon.stores import default_store_url


class Incident(BaseModel):
    incident_id: str
    service: str


def page(ctx: Context[Incident, None]) -> Wait:
    ctx.Log("paged the on-call engineer", service=ctx.Input.service)
    return Wait(
        Event(
            "incident.resolved",
            match={"incident_id": ctx.Input.incident_id},
            timeout=timedelta(hours=1),
        ),
        "Postmortem",
        on_timeout="Escalate",
    )


def postmortem(ctx: Context[Incident, None]) -> Next:
    resolution = ctx.Decision["payload"]
    return Next(
        END,
        output={
            "incident": ctx.Input.incident_id,
            "resolved_by": resolution["by"],
            "summary": f"{ctx.Input.service} restored by {resolution['by']}",
        },
    )


def escalate(ctx: Context[Incident, None]) -> Next:
    return Next(END, output={"incident": ctx.Input.incident_id, "escalated": True})


IncidentResponse = (
    Workflow("incident_response", "Page, wait for the resolution, write it up")
    .Input(Incident)
    .Flow({START: page, "Postmortem": postmortem, "Escalate": escalate})
)


async def serve() -> None:
    store = default_store_url()
    async with Worker(IncidentResponse, store, poll_interval=0.05), Client(store) as client:
        handle = await client.Start(
            "incident_response", {"incident_id": "INC-7", "service": "checkout"}
        )
        print(f"run {handle.run_id}", flush=True)
        info = (await handle.WaitUntil("waiting", timeout=30)).body.wait
        assert info is not None
        print(f"waiting for {info.spec['name']}", flush=True)
        print(f"completed: {await handle.Result(timeout=3600)}", flush=True)


def resolve(incident_id: str, by: str) -> None:
    with SyncClient(default_store_url()) as client:
        reached = client.send(
            "incident.resolved",
            {"incident_id": incident_id, "by": by},
            event_id=f"resolved-{incident_id}",
        )
        print(f"delivered to {reached}")


def main(argv: list[str]) -> None:
    if argv == ["serve"]:
        anyio.run(serve)
    elif len(argv) == 3 and argv[0] == "resolve":
        resolve(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
