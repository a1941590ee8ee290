"""The `holon` command line, run as a real program in subprocesses against a real SQLite
file and a real Redis, with a real `holon worker` executing the runs: every verb, its
`--json` output parsed, exit codes, `show --follow`, and bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from holon import Client, RunStatus, Steward
from holon.stores import open_store
from holon.stores.base import Store
from tests.conftest import REDIS_URL
from tests.redis_support import delete_prefix, redis_answers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
HOLON = str(Path(sys.executable).parent / "holon")
APP = "tests.cli_app:WORKFLOWS"
TIMEOUT = 30.0


@dataclass
class Done:
    """A finished `holon` command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs `holon` against one store."""

    store_url: str
    key_prefix: str
    env: dict[str, str]

    def args(self, *args: str, app: bool = False) -> list[str]:
        base = [HOLON, "--store", self.store_url, "--key-prefix", self.key_prefix]
        return [*base, *(["--app", APP] if app else []), *args]

    async def __call__(self, *args: str, app: bool = False) -> Done:
        with anyio.fail_after(TIMEOUT):
            done = await anyio.run_process(
                self.args(*args, app=app), cwd=REPO, env=self.env, check=False
            )
        return Done(done.returncode, done.stdout.decode(), done.stderr.decode())

    async def many(self, *commands: list[str], app: bool = False) -> list[Done]:
        """Run independent commands at once (each `holon` takes a second to start)."""
        done: list[Done | None] = [None] * len(commands)

        async def one(index: int, args: list[str]) -> None:
            done[index] = await self(*args, app=app)

        async with anyio.create_task_group() as group:
            for index, args in enumerate(commands):
                group.start_soon(one, index, args)
        return [d for d in done if d is not None]

    def store(self) -> Store:
        return open_store(self.store_url, key_prefix=self.key_prefix)


@pytest.fixture(params=["sqlite", "redis"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    env = {**os.environ, "HOLON_TEST_FLAKY": str(tmp_path / "flaky")}
    env["HOLON_TEST_RELEASE"] = str(tmp_path / "release")
    env.pop("HOLON_APP", None)
    if request.param == "sqlite":
        yield Cli(f"sqlite:///{tmp_path / 'holon.db'}", "", env)
        return
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    prefix = f"holon-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield Cli(REDIS_URL, prefix, env)
    finally:
        delete_prefix(REDIS_URL, prefix)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def worker_process(cli: Cli, log: Path, *extra: str) -> Iterator[WorkerProcess]:
    """`holon worker tests.cli_app:WORKFLOWS` logging to `log`, killed on the way out
    if still running."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            cli.args("worker", APP, "--poll-interval", "0.05", *extra),
            cwd=REPO,
            env=cli.env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield WorkerProcess(process, log)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


@asynccontextmanager
async def client_of(cli: Cli) -> AsyncIterator[Client]:
    store = cli.store()
    try:
        async with Client(store, poll_interval=0.05) as client:
            yield client
    finally:
        await store.close()


async def started(cli: Cli, workflow: str, value: Any = None) -> str:
    args = ["--json", "run", workflow, "--as", "bob"]
    if value is not None:
        args += ["--input", json.dumps(value)]
    run_id = (await cli(*args, app=True)).json()["run_id"]
    assert isinstance(run_id, str)
    return run_id


async def starts(cli: Cli, *runs: tuple[str, Any]) -> list[str]:
    """Start runs at once; their ids in the order given."""
    ids: list[str] = [""] * len(runs)

    async def one(index: int, workflow: str, value: Any) -> None:
        ids[index] = await started(cli, workflow, value)

    async with anyio.create_task_group() as group:
        for index, (workflow, value) in enumerate(runs):
            group.start_soon(one, index, workflow, value)
    return ids


async def reaches(client: Client, run_id: str, status: str) -> None:
    await (await client.Get(run_id)).WaitUntil(status, timeout=TIMEOUT)


@pytest.mark.timeout(400)  # some sixty runs of `holon`, a second of start-up each
async def test_every_verb_through_the_holon_program(cli: Cli, tmp_path: Path) -> None:
    with worker_process(cli, tmp_path / "worker.log") as worker:
        async with client_of(cli) as client:
            await _catalogue_and_approvals(cli, client)
            await _answers_events_and_steering(cli, client)
            await _surgery(cli, client)
            await _bad_arguments(cli)
        worker.process.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: worker.process.wait(TIMEOUT))
        assert code == 0, worker.said()
    async with client_of(cli) as client:
        assert len(await client.List(status="running")) == 0  # no run left stranded


async def _catalogue_and_approvals(cli: Cli, client: Client) -> None:
    run_id = await started(cli, "greet", {"name": "Ada"})
    listed, workflows, described, human, schedules = await cli.many(
        ["--json", "list", "--workflow", "greet"],
        ["--json", "workflows"],
        ["--json", "describe", "greet"],
        ["describe", "greet"],
        ["--json", "schedules"],
    )
    assert [r["run_id"] for r in listed.json()] == [run_id]
    assert listed.json()[0]["sandbox"] is False
    names = {w["name"] for w in workflows.json()}
    assert {"greet", "form", "paid", "flaky", "model", "slow"} <= names
    schema = described.json()
    assert schema["input_schema"]["required"] == ["name"] and schema["versions"] == ["1"]
    assert "flowchart" in human.out
    assert schedules.json() == []

    await reaches(client, run_id, "waiting")
    [gate] = (await cli("--json", "pending", "--as", "ann")).json()
    assert gate["run_id"] == run_id and gate["approvers"] == ["ann"]
    shown = (await cli("--json", "show", run_id)).json()
    assert shown["status"] == "waiting" and shown["waiting_for"] == "approval by ann"
    assert shown["steps_done"] == 2 and shown["timeline"][0]["kind"] == "started"
    human = (await cli("show", run_id)).out
    assert "waiting for: approval by ann" in human and "steps done: 2" in human

    # `show --follow` prints events as they happen until the run completes.
    async with await anyio.open_process(
        cli.args("show", run_id, "--follow"), cwd=REPO, env=cli.env
    ) as follower:
        approved = await cli("--json", "approve", run_id, "--as", "ann", "--comment", "ok")
        assert approved.json()["run_id"] == run_id
        with anyio.fail_after(TIMEOUT):
            assert await follower.wait() == 0
        assert follower.stdout is not None
        followed = (await follower.stdout.receive(1 << 20)).decode()
    assert "decision" in followed and followed.rstrip().endswith(f"run {run_id} completed")
    again = await cli("approve", run_id, "--as", "ann")
    assert again.code == 1 and again.err.startswith("error:") and "Traceback" not in again.err

    rejected = await started(cli, "greet", {"name": "Bo"})
    await reaches(client, rejected, "waiting")
    assert (await cli("--json", "reject", rejected, "--as", "ann")).json()["status"]
    follow = await cli("show", rejected, "--follow")
    assert follow.code == 4 and "ended rejected" in follow.err


async def _answers_events_and_steering(cli: Cli, client: Client) -> None:
    form, *paid, held = await starts(
        cli, ("form", None), ("paid", None), ("paid", None), ("greet", {"name": "Cy"})
    )
    for run_id in (form, *paid, held):
        await reaches(client, run_id, "waiting")
    answered, sent, paused = await cli.many(
        ["answer", form, '"blue"', "--as", "ann"],
        ["--json", "send", "order.paid", "--payload", '{"amount": 5}'],
        ["--json", "pause", held],
    )
    assert answered.code == 0
    assert await (await client.Get(form)).Result(timeout=TIMEOUT) == {"colour": "blue"}
    assert sorted(sent.json()["runs"]) == sorted(paid)
    assert paused.json()["status"] == "paused"
    one = await started(cli, "paid")
    sent_one = await cli("--json", "send", "order.paid", "--run", one, "--payload", "{}")
    assert sent_one.json()["runs"] == [one]

    assert (await cli("--json", "resume", held)).json()["status"] == "waiting"
    assert (await cli("--json", "stop", held)).json()["status"] == "stopped"
    assert (await cli("--json", "retry", held)).json()["status"] == "waiting"

    bulk = await starts(cli, ("paid", None), ("paid", None), ("paid", None))
    for run_id in bulk:
        await reaches(client, run_id, "waiting")
    stopped = (await cli("--json", "stop", "--workflow", "paid", "--status", "waiting")).json()
    assert stopped["counts"] == {"done": 3}
    assert sorted(r["run_id"] for r in stopped["runs"]) == sorted(bulk)
    repeated = (await cli("--json", "stop", "--workflow", "paid")).json()
    assert repeated["counts"] == {"skipped": 6}  # three stopped, three completed
    table = (await cli("stop", "--workflow", "paid")).out
    assert "stop: 6 skipped" in table


async def _surgery(cli: Cli, client: Client) -> None:
    marker = Path(cli.env["HOLON_TEST_FLAKY"])
    marker.touch()
    flaky = await started(cli, "flaky")
    failed = await cli("show", flaky, "--follow")
    assert failed.code == 4 and "ended failed" in failed.err
    marker.unlink()
    retried = (await cli("--json", "retry", flaky, "--as", "ops")).json()
    assert retried["status"] in ("queued", "running", "completed")
    assert await (await client.Get(flaky)).Result(timeout=TIMEOUT) == {"total": 10}

    model = await started(cli, "model")
    assert await (await client.Get(model)).Result(timeout=TIMEOUT) == "yes"
    rerun = (await cli("--json", "rerun", model, "Decide", app=True)).json()
    assert rerun["same"] is True and rerun["outcome"] == "END"
    replay = (await cli("--json", "replay", model, app=True)).json()
    assert replay["played"] == {"Ask#1": 1} and replay["diverged"] is False
    assert replay["run_id"].startswith("sandbox-") and replay["status"] == "completed"
    listing = (await cli("list")).out
    assert f"{replay['run_id']} [sandbox]" in listing
    assert (await cli("--json", "show", replay["run_id"])).json()["sandbox"] is True

    timeline = (await cli("--json", "show", flaky)).json()["timeline"]
    [charge] = [
        e["seq"] for e in timeline if e["kind"] == "step_started" and e["step"] == "Charge"
    ][:1]
    forked = (
        await cli("--json", "fork", flaky, "--at", str(charge), "--state", '{"total": 5}')
    ).json()
    assert forked["forked_from"] == flaky
    assert await (await client.Get(forked["run_id"])).Result(timeout=TIMEOUT) == {"total": 15}

    steward = Steward(client.store)
    await steward.Schedule("model", every=3600, name="hourly")
    [schedule] = (await cli("--json", "schedules")).json()
    assert schedule["name"] == "hourly" and schedule["every"] == 3600


async def _bad_arguments(cli: Cli) -> None:
    status, bad_json, missing, unknown, bad_input, nothing, no_app, debug = await cli.many(
        ["list", "--status", "bogus"],
        ["run", "greet", "--input", "{oops"],
        ["show", "no-such-run"],
        ["run", "nope"],
        ["run", "greet", "--input", '{"nom": "x"}'],
        ["stop"],
        ["replay", "some-run"],
        ["--debug", "show", "no-such-run"],
    )
    assert status.code == 2 and "--status" in status.err and "bogus" in status.err
    assert bad_json.code == 2 and "--input is not JSON" in bad_json.err
    assert "Traceback" not in bad_json.err and len(bad_json.err.strip().splitlines()) == 1
    assert missing.code == 3 and "no run 'no-such-run'" in missing.err
    assert unknown.code == 3 and "no workflow 'nope'" in unknown.err
    assert bad_input.code == 1 and "name" in bad_input.err
    assert nothing.code == 2 and "give RUN" in nothing.err
    assert no_app.code == 2 and "--app" in no_app.err
    assert debug.code == 3 and "Traceback" in debug.err


async def test_a_worker_stops_gracefully_on_sigterm_and_strands_no_run(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'holon.db'}", "", {**os.environ})
    cli.env["HOLON_TEST_RELEASE"] = str(tmp_path / "release")
    with worker_process(cli, tmp_path / "worker.log", "--verbose") as worker:
        async with client_of(cli) as client:
            done = await started(cli, "model")
            assert await (await client.Get(done)).Result(timeout=TIMEOUT) == "yes"
            slow = await started(cli, "slow")
            handle = await client.Get(slow)
            with anyio.fail_after(TIMEOUT):
                while not any(e.step == "Hold" for e in await handle.Timeline()):
                    await anyio.sleep(0.02)  # sleep-ok: polling the store for a step start
            worker.process.send_signal(signal.SIGTERM)  # the step is in flight: it may finish
            with anyio.fail_after(TIMEOUT):
                while "SIGTERM: stopping" not in worker.said():
                    await anyio.sleep(0.02)  # sleep-ok: polling the log for the signal's note
            Path(cli.env["HOLON_TEST_RELEASE"]).touch()
            code = await anyio.to_thread.run_sync(lambda: worker.process.wait(TIMEOUT))
            log = worker.said()
            assert code == 0, log
            record = await handle.Record()
    assert "SIGTERM: stopping" in log and "(model): running -> completed" in log
    assert "checkpoint" in log  # --verbose: a line per checkpoint
    # Handed back at its next step boundary, for another worker: not left `running`.
    assert record.status == RunStatus.QUEUED and record.lease is None, log
    assert record.body.cursor is not None and record.body.cursor.step == "Done"
