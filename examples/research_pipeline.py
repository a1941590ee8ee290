"""A research pipeline in the imperative model: fetch papers, analyse them, write a
synthesis. Each `ctx.Task` is checkpointed, so a crash during the synthesis resumes
there: the papers are not fetched again and the analysis is not redone.

    python examples/research_pipeline.py "quantum computing"

Try a crash: run it with `--hold-in synthesis`, kill the process (Ctrl-C or
`kill -9`) while it holds, then run the same command again with the same `--run-id`
and without `--hold-in`: it finishes from the third step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio
from pydantic import BaseModel

from holon import ExecuteContext, Workflow, WorkflowRunner, current_step


class Topic(BaseModel):
    topic: str


def _record(step: str) -> None:
    """Append which step ran, with its idempotency key, to $RESEARCH_LOG (if set)."""
    log = os.environ.get("RESEARCH_LOG")
    running = current_step()
    if log and running is not None:
        with open(log, "a") as file:
            file.write(json.dumps({"step": step, "key": running.IdempotencyKey}) + "\n")


async def _maybe_hold(step: str) -> None:
    if os.environ.get("RESEARCH_HOLD_IN") == step:
        print(f"holding in {step}", flush=True)
        await anyio.sleep_forever()


async def fetch_papers(topic: str) -> list[dict[str, str]]:
    _record("fetch_papers")
    await _maybe_hold("fetch_papers")
    return [
        {"title": f"{topic}: a survey", "year": "2024"},
        {"title": f"Advances in {topic}", "year": "2025"},
    ]


async def analyze_papers(papers: list[dict[str, str]]) -> dict[str, Any]:
    _record("analyze_papers")
    await _maybe_hold("analyze_papers")
    return {"count": len(papers), "newest": max(p["year"] for p in papers)}


async def generate_synthesis(analysis: dict[str, Any]) -> str:
    _record("generate_synthesis")
    await _maybe_hold("synthesis")
    return f"{analysis['count']} papers, the newest from {analysis['newest']}"


async def research_pipeline(ctx: ExecuteContext[Topic, Any]) -> dict[str, Any]:
    papers = await ctx.Task(fetch_papers, ctx.Input.topic)
    analysis = await ctx.Task(analyze_papers, papers)
    synthesis = await ctx.Task(generate_synthesis, analysis)
    return {"topic": ctx.Input.topic, "synthesis": synthesis}


ResearchPipeline = (
    Workflow("research_pipeline", "Fetch, analyse, synthesise")
    .Input(Topic)
    .Execute(research_pipeline)
)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("topic", nargs="?", default="quantum computing")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--store", default=None, help="store URL (default: .holon/holon.db)")
    parser.add_argument(
        "--hold-in", default=None, help="hold forever inside this step, to try a crash"
    )
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.hold_in:
        os.environ["RESEARCH_HOLD_IN"] = args.hold_in
    async with WorkflowRunner(ResearchPipeline, args.store, lease_ttl=args.lease_ttl) as runner:
        handle = await runner.Run({"topic": args.topic}, run_id=args.run_id)
        print(f"run {handle.run_id}", flush=True)
        result = await handle.Result()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
