"""Secrets: sealed in the store, intact for the steps, redacted in the timeline, refused
without a key; on every store, searched for in the store's raw bytes."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pytest
import redis
from pydantic import BaseModel, SecretBytes, SecretStr

from holon import (
    END,
    START,
    Event,
    HumanInput,
    Keyring,
    Next,
    RunFailed,
    RunStatus,
    Secret,
    SecretKeyError,
    Wait,
    Workflow,
    WorkflowDefinitionError,
    WorkflowRunner,
)
from holon.sealing import ENVELOPE, SECRET_KEYS_ENV, redact, secret_name
from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import Store
from holon.stores.redis import RedisStore

pytestmark = pytest.mark.anyio

TOKEN = "tok-7f3a9c1e-plaintext"
API_KEY = "key-41b2d8aa-plaintext"
PASSWORD = "pw-0c55e2b7-plaintext"
PIN = b"pin-9d1e-plaintext"
PLAINTEXTS = [TOKEN, API_KEY, PASSWORD, PIN.decode()]


class Login(BaseModel):
    user: str


class Vault(BaseModel):
    token: SecretStr | None = None
    api_key: Annotated[str, Secret()] = ""
    pins: list[SecretBytes] = []
    uses: int = 0


class Creds(BaseModel):
    user: str
    password: SecretStr


def login(ctx: Any) -> Any:
    ctx.SetState(token=SecretStr(TOKEN), api_key=API_KEY, pins=[SecretBytes(PIN)])
    ctx.Log("logged in", password=PASSWORD, token=ctx.State.token)
    return Next("Use", output=Creds(user=ctx.Input.user, password=SecretStr(PASSWORD)))


def use(ctx: Any) -> Any:
    state = ctx.State
    creds = ctx.StepResults["Login"]
    seen = {
        "token": state.token.get_secret_value(),
        "api_key": state.api_key,
        "pin": state.pins[0].get_secret_value().decode(),
        "password": creds["password"].get_secret_value(),
        "user": creds["user"],
    }
    ctx.SetState(uses=state.uses + 1)
    # Handed on: the secret read from a result is sealed again in this output.
    return Next(END, output={"seen_ok": seen == EXPECTED, "again": creds["password"]})


EXPECTED = {
    "token": TOKEN,
    "api_key": API_KEY,
    "pin": PIN.decode(),
    "password": PASSWORD,
    "user": "ann",
}


def vault(keyring: Keyring | None) -> Workflow:
    wf = (
        Workflow("vault")
        .Input(Login)
        .State(Vault)
        .Flow({START: lambda ctx: "Login", "Login": login, "Use": use})
    )
    return wf.Secrets(keyring) if keyring is not None else wf


def keyring(*ids: str) -> Keyring:
    return Keyring({kid: os.urandom(32) for kid in ids})


async def raw_bytes(store: Store) -> bytes:
    """Every byte the store holds, read behind its back."""
    if isinstance(store, MemoryStore):
        return repr(store.__dict__).encode()
    if isinstance(store, SQLiteStore):
        path = Path(store.path)
        chunks = [p.read_bytes() for p in path.parent.glob(path.name + "*")]
        with sqlite3.connect(path) as conn:  # and what the tables hold, checkpointed or not
            for table in ("holon_runs", "holon_results", "holon_timeline"):
                chunks.append(repr(conn.execute(f"SELECT * FROM {table}").fetchall()).encode())
        return b"".join(chunks)
    assert isinstance(store, RedisStore)
    if not store._own_client:  # fakeredis: the store's own client reads it all
        client = store._client
        keys = [k async for k in client.scan_iter(match=f"{store.key_prefix}*")]
        values = [await _read_async(client, k) for k in keys]
        return repr(values).encode()
    url = store.url
    sync: Any
    if store.cluster:
        sync = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
    else:
        sync = redis.Redis.from_url(url)
    try:
        keys = list(sync.scan_iter(match=f"{store.key_prefix}*"))
        assert keys, "nothing stored under the prefix"
        # Each value as it is (not DUMP, which may compress it).
        return repr([_read(sync, k) for k in keys]).encode()
    finally:
        sync.close()


def _read(client: Any, key: Any) -> Any:
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    return {
        "string": lambda: client.get(key),
        "hash": lambda: client.hgetall(key),
        "list": lambda: client.lrange(key, 0, -1),
        "zset": lambda: client.zrange(key, 0, -1),
        "set": lambda: client.smembers(key),
    }[kind]()


async def _read_async(client: Any, key: str) -> Any:
    kind = await client.type(key)
    if kind == "string":
        return await client.get(key)
    if kind == "hash":
        return await client.hgetall(key)
    if kind == "list":
        return await client.lrange(key, 0, -1)
    if kind == "zset":
        return await client.zrange(key, 0, -1)
    return await client.smembers(key)


async def test_a_secret_round_trips_sealed_and_is_nowhere_in_plaintext(store: Store) -> None:
    keys = keyring("k1")
    async with WorkflowRunner(vault(keys), store) as runner:
        handle = await runner.Run({"user": "ann"})
        result = await handle.Result(timeout=10)
        assert result["seen_ok"] is True
        assert result["again"][ENVELOPE] == 1 and result["again"]["kid"] == "k1"
        record = await handle.Record()
        timeline = await handle.Timeline()
    state = record.body.state
    assert state["token"][ENVELOPE] == 1 and state["token"]["t"] == "str"
    assert state["api_key"]["t"] == "json" and state["pins"][0]["t"] == "bytes"
    assert state["uses"] == 1
    assert record.results["Login"]["password"]["kid"] == "k1"

    raw = await raw_bytes(store)
    for plaintext in PLAINTEXTS:
        assert plaintext.encode() not in raw, f"{plaintext!r} is stored in plaintext"
        assert base64.b64encode(plaintext.encode()) not in raw
    assert b"**********" not in raw, "a secret was stored masked"

    log = next(e for e in timeline if e.kind == "log")
    assert log.data == {"message": "logged in", "password": "[redacted]", "token": "[redacted]"}
    patch = next(e for e in timeline if e.kind == "state_changed").data["patch"]
    assert patch == {"token": "[redacted]", "api_key": "[redacted]", "pins": ["[redacted]"]}


async def test_without_a_key_a_secret_is_refused_naming_the_step_and_field() -> None:
    async with WorkflowRunner(vault(None), "memory://") as runner:
        handle = await runner.Run({"user": "ann"})
        with pytest.raises(RunFailed, match="SecretKeyError") as failed:
            await handle.Result(timeout=10)
        assert failed.value.step == "Login"
        record = await handle.Record()
        assert record.status == RunStatus.FAILED and record.body.error is not None
        message = record.body.error.message
        assert "step 'Login'" in message and "'token'" in message
        assert SECRET_KEYS_ENV in message and "never stored masked or in plaintext" in message
        assert record.body.state["token"] is None, "the secret was stored"
        assert TOKEN not in repr(record) and TOKEN not in repr(await handle.Timeline())


async def test_a_secret_input_or_output_without_a_key_is_refused() -> None:
    class Secretive(BaseModel):
        password: SecretStr

    wf = Workflow("in").Input(Secretive).Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, "memory://") as runner:
        with pytest.raises(SecretKeyError, match="field 'password' holds a secret"):
            await runner.Run({"password": PASSWORD})
        assert (await runner.List()).items == []

    def hand_out(ctx: Any) -> Any:
        return Next(END, output={"nested": [{"pw": SecretStr(PASSWORD)}]})

    out = Workflow("out").Flow({START: lambda ctx: "Out", "Out": hand_out})
    async with WorkflowRunner(out, "memory://") as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match=r"field 'nested\[0\]\.pw' holds a secret"):
            await handle.Result(timeout=10)


async def test_keys_rotate_by_id(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'rotate.db'}"
    old = keyring("old")
    async with WorkflowRunner(vault(old), store, execute=False) as runner:
        run = await runner.Run({"user": "ann"}, run_id="first")
    async with WorkflowRunner(vault(old), store) as runner:
        await (await runner.Get(run.run_id)).Result(timeout=10)
    new = Keyring({"new": os.urandom(32), "old": old.keys["old"]})
    assert new.current == "new"
    async with WorkflowRunner(vault(new), store) as runner:
        second = await runner.Run({"user": "bob"}, run_id="second")
        assert (await second.Result(timeout=10))["again"]["kid"] == "new"
        first = await (await runner.Get("first")).Record()
        assert first.body.state["token"]["kid"] == "old"
    with pytest.raises(SecretKeyError, match="sealed with key 'old', which is not configured"):
        keyring("new").open(first.body.state["token"])
    tampered = dict(first.body.state["token"], ct=first.body.state["token"]["ct"][:-4] + "AAAA")
    with pytest.raises(SecretKeyError, match="does not open"):
        new.open(tampered)


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    other = base64.urlsafe_b64encode(os.urandom(16)).decode()
    monkeypatch.setenv(SECRET_KEYS_ENV, f"k2:{key},k1:{other}")
    parsed = vault(None).plan.rules.keyring
    assert parsed is not None and parsed.current == "k2" and sorted(parsed.keys) == ["k1", "k2"]
    assert "k2" in repr(parsed) and key not in repr(parsed)
    monkeypatch.setenv(SECRET_KEYS_ENV, "k1:not base64!!")
    with pytest.raises(SecretKeyError, match="key 'k1'"):
        Keyring.from_env()
    with pytest.raises(WorkflowDefinitionError, match="workflow 'vault': HOLON_SECRET_KEYS"):
        WorkflowRunner(vault(None), "memory://")
    with pytest.raises(SecretKeyError, match="16, 24 or 32 bytes"):
        Keyring({"k": b"short"})
    monkeypatch.delenv(SECRET_KEYS_ENV)
    assert Keyring.from_env() is None


def test_redaction_by_name_and_type() -> None:
    assert [secret_name(n) for n in ("password", "client_secret", "apiKey", "tokens")] == [
        True,
        True,
        True,
        False,
    ]
    assert redact({"user": "ann", "auth": {"password": "x"}, "s": SecretStr("y")}) == {
        "user": "ann",
        "auth": {"password": "[redacted]"},
        "s": "[redacted]",
    }


class Otp(BaseModel):
    code: SecretStr


async def test_a_secret_answer_or_event_payload_is_sealed_and_reaches_the_next_step(
    store: Store,
) -> None:
    seen: list[str] = []

    def after_answer(ctx: Any) -> Any:
        seen.append(ctx.Decision["code"].get_secret_value())
        return Wait(Event("paid"), "Paid")

    def paid(ctx: Any) -> Any:
        seen.append(ctx.Decision["payload"]["card"].get_secret_value())
        return END

    wf = (
        Workflow("otp")
        .Flow(
            {
                START: lambda ctx: Wait(HumanInput("Code?", schema=Otp), "Check"),
                "Check": after_answer,
                "Paid": paid,
            }
        )
        .Secrets(keyring("k1"))
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Answer({"code": "otp-5151-plaintext"}, by="ann")
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert record.body.wait is not None and record.body.wait.kind == "event"
        await handle.Send("paid", {"card": SecretStr("card-4242-plaintext")})
        await handle.Result(timeout=10)
        timeline = await handle.Timeline()
    assert seen == ["otp-5151-plaintext", "card-4242-plaintext"]
    decision = next(e for e in timeline if e.kind == "decision")
    assert decision.data["value"] == {"code": "[redacted]"}
    received = next(e for e in timeline if e.kind == "event_received")
    assert received.data["payload"] == {"card": "[redacted]"}
    raw = await raw_bytes(store)
    for plaintext in (b"otp-5151-plaintext", b"card-4242-plaintext"):
        assert plaintext not in raw
