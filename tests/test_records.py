"""`evolve`, the engine's copy of a record with changes, against pydantic's own copy."""

from __future__ import annotations

from holon.stores.base import (
    Cursor,
    ErrorInfo,
    Lease,
    RunBody,
    RunRecord,
    RunStatus,
    evolve,
)


def _record() -> RunRecord:
    return RunRecord(
        run_id="r1",
        workflow="wf",
        version="v1",
        status=RunStatus.RUNNING,
        input={"repo": "acme/app"},
        body=RunBody(cursor=Cursor(step="Build"), state={"n": 1}, counts={"Build": 1}),
        results={"Build": "ok"},
        lease=Lease(owner="w1", token=3, expires_at=10.0),
        created_at=1.0,
        updated_at=2.0,
    )


def test_evolve_matches_model_copy_with_the_same_update() -> None:
    record = _record()
    changes = {
        "status": RunStatus.COMPLETED,
        "body": evolve(record.body, {"cursor": None, "output": {"done": True}}),
        "seq": 7,
        "lease": None,
    }
    evolved = evolve(record, changes)
    copied = record.model_copy(update=changes)
    assert evolved == copied
    # Unlike a model copy, an evolved record counts every field as given (one set
    # shared by all copies): dumps that leave unset fields out are not used on records.
    assert evolved.model_fields_set == set(RunRecord.model_fields)
    assert evolved.body.model_fields_set == set(RunBody.model_fields)
    assert evolved.model_dump_json() == copied.model_dump_json()
    assert evolved.model_dump_json(exclude_defaults=True) == copied.model_dump_json(
        exclude_defaults=True
    )


def test_evolve_leaves_the_original_alone() -> None:
    record = _record()
    evolved = evolve(
        record, {"seq": 9, "body": evolve(record.body, {"error": ErrorInfo(type="E", message="m")})}
    )
    assert record.seq == 0 and record.body.error is None
    assert evolved.seq == 9 and evolved.body.error is not None
    assert evolved.body.state == record.body.state
    assert type(evolved) is RunRecord and type(evolved.body) is RunBody


def test_an_evolved_record_can_be_changed_and_copied_again() -> None:
    evolved = evolve(_record(), {"seq": 2})
    evolved.seq = 3
    again = evolved.model_copy(update={"seq": 4})
    assert (evolved.seq, again.seq) == (3, 4)
    assert RunRecord.model_validate_json(again.model_dump_json()) == again
