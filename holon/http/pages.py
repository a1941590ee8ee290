"""The dashboard's HTML, rendered on the server (every value escaped): the page frame,
the sign-in form, the runs list, a run's page and the approvals inbox. The script
(`static/dashboard.js`) makes the buttons call the API and follows the live timeline."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any
from urllib.parse import urlencode

from holon.control.sandbox import SANDBOX_PREFIX
from holon.http.auth import Identity
from holon.runtime.waits import WaitInfo
from holon.stores.base import RunRecord, RunStatus, RunSummary, TimelineEvent

__all__ = ["approvals_page", "frame", "login_page", "run_page", "runs_page"]


def _time(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(value: Any) -> str:
    return escape(json.dumps(value, indent=2, sort_keys=True, default=str))


_SANDBOX = (
    ' <span class="badge sandbox" title="a sandbox run: never touches its original">sandbox</span>'
)


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}" data-status>{escape(status)}</span>'


def frame(title: str, body: str, identity: Identity | None, csrf: str | None) -> str:
    nav = ""
    if identity is not None:
        nav = (
            '<nav><a href="/dashboard">Runs</a> <a href="/dashboard/approvals">Approvals</a>'
            f'<span class="who">{escape(identity.name)}</span>'
            '<form method="post" action="/dashboard/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{escape(csrf or "")}">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} · holon</title>"
        f'<meta name="csrf" content="{escape(csrf or "")}">'
        '<link rel="stylesheet" href="/dashboard/static/dashboard.css">'
        '<script defer src="/dashboard/static/dashboard.js"></script>'
        f"</head><body><header><h1>holon</h1>{nav}</header><main>{body}</main>"
        '<div id="message" role="status"></div></body></html>'
    )


def login_page(error: str | None = None) -> str:
    problem = f'<p class="error">{escape(error)}</p>' if error else ""
    body = (
        f"<h2>Sign in</h2>{problem}"
        '<form method="post" action="/dashboard/login" class="login">'
        '<label>Token <input type="password" name="token" autocomplete="off" required></label>'
        '<button type="submit">Sign in</button></form>'
    )
    return frame("Sign in", body, None, None)


def runs_page(
    runs: list[RunSummary],
    counts: dict[str, int],
    workflows: list[str],
    status: str | None,
    workflow: str | None,
    next_cursor: str | None,
) -> str:
    def link(**query: str | None) -> str:
        kept = {k: v for k, v in {"status": status, "workflow": workflow, **query}.items() if v}
        return "/dashboard" + (f"?{urlencode(kept)}" if kept else "")

    count_links = " ".join(
        f'<a class="count {escape(s.value)}" href="{escape(link(status=s.value, cursor=None))}">'
        f"{escape(s.value)} <b>{counts.get(s.value, 0)}</b></a>"
        for s in RunStatus
        if counts.get(s.value)
    )
    status_options = "".join(
        f'<option value="{s.value}"{" selected" if s.value == status else ""}>{s.value}</option>'
        for s in RunStatus
    )
    workflow_options = "".join(
        f'<option value="{escape(w)}"{" selected" if w == workflow else ""}>{escape(w)}</option>'
        for w in workflows
    )
    rows = "".join(
        f'<tr data-run="{escape(r.run_id)}"><td><a href="/dashboard/runs/{escape(r.run_id)}">'
        f"{escape(r.run_id)}</a></td><td>{escape(r.workflow)}</td><td>{escape(r.version)}</td>"
        f"<td>{_badge(r.status.value)}"
        f"{_SANDBOX if r.workflow.startswith(SANDBOX_PREFIX) else ''}</td>"
        f"<td>{_time(r.created_at)}</td>"
        f"<td>{_time(r.updated_at)}</td></tr>"
        for r in runs
    )
    more = (
        f'<a class="next" href="{escape(link(cursor=next_cursor))}">Next page</a>'
        if next_cursor
        else ""
    )
    body = (
        "<h2>Runs</h2>"
        '<form method="get" action="/dashboard" class="filters">'
        f'<select name="status"><option value="">any status</option>{status_options}</select>'
        f'<select name="workflow"><option value="">any workflow</option>{workflow_options}'
        '</select><button type="submit">Filter</button></form>'
        f'<p class="counts">{count_links or "no runs"}</p>'
        '<table class="runs"><thead><tr><th>run</th><th>workflow</th><th>version</th>'
        "<th>status</th><th>created (UTC)</th><th>updated (UTC)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}"
    )
    return body


def _waiting_panel(run_id: str, info: WaitInfo | None) -> str:
    if info is None:
        return '<section id="waiting" hidden></section>'
    api = f"/api/v1/runs/{escape(run_id)}"
    if info.kind == "approval":
        action = (
            f'<form data-api="{api}/approve" class="decision">'
            f'<input type="hidden" name="digest" value="{escape(info.digest or "")}">'
            f'<input type="hidden" name="wait_id" value="{escape(info.wait_id)}">'
            '<input name="comment" placeholder="comment">'
            '<button type="submit" class="approve">Approve</button>'
            f'<button type="submit" class="reject" formaction="{api}/reject" '
            f'data-api="{api}/reject">Reject</button></form>'
        )
    elif info.kind == "input":
        if info.options:
            # Values as JSON, which the script parses: an option need not be a string.
            choices = "".join(
                f'<option value="{escape(json.dumps(o))}">{escape(str(o))}</option>'
                for o in info.options
            )
            field = f'<select name="value" data-json>{choices}</select>'
        else:
            field = '<input name="value" placeholder="answer" required>'
        action = (
            f'<form data-api="{api}/answer">'
            f'<input type="hidden" name="wait_id" value="{escape(info.wait_id)}">'
            f'{field}<button type="submit">Answer</button></form>'
        )
    else:
        action = ""
    return (
        f'<section id="waiting" data-kind="{escape(info.kind)}"><h3>Waiting: '
        f"{escape(info.kind)} at {escape(info.step)}</h3>"
        f"<p>{escape(info.question or '')}</p>"
        f"<p>Approvers: {escape(', '.join(info.approvers))} "
        f"(needed: {info.approvals_needed})</p>"
        f'<pre class="payload">{_json(info.payload)}</pre>'
        f'<p>Payload digest: <code class="digest">{escape(info.digest or "")}</code></p>'
        f"{action}</section>"
    )


def timeline_rows(events: list[TimelineEvent]) -> str:
    """Timeline rows as the page's script also makes them (so the page reads without it)."""
    rows = []
    for event in events:
        details = json.dumps(event.data, separators=(",", ":"), default=str) if event.data else ""
        at = dt.datetime.fromtimestamp(event.at, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        rows.append(
            f'<tr data-kind="{escape(event.kind)}" data-seq="{event.seq}" '
            f'data-step="{escape(event.step or "")}" '
            f'data-duration="{escape(str(event.data.get("duration_ms", "")))}">'
            f"<td>{event.seq}</td><td>{at}</td><td>{escape(event.kind)}</td>"
            f'<td>{escape(event.step or "")}</td><td class="details">{escape(details)}</td></tr>'
        )
    return "".join(rows)


def run_page(
    record: RunRecord,
    info: WaitInfo | None,
    graph: str,
    steps: list[str],
    events: list[TimelineEvent],
    sandbox: bool,
) -> str:
    run_id = escape(record.run_id)
    api = f"/api/v1/runs/{run_id}"
    goto = "".join(f'<option value="{escape(s)}">{escape(s)}</option>' for s in steps)
    marker = _SANDBOX if sandbox else ""
    # JSON in a script element is not HTML-decoded: only `<` needs keeping out of it.
    after = events[-1].seq if events else 0
    data = json.dumps({"run_id": record.run_id, "status": record.status.value, "after": after})
    data = data.replace("<", "\\u003c")
    controls = (
        '<section class="controls">'
        f'<form data-api="{api}/pause" class="inline"><button>Pause</button></form>'
        f'<form data-api="{api}/stop" class="inline"><button>Stop</button></form>'
        f'<form data-api="{api}/resume" class="resume"><label>goto '
        f'<select name="goto"><option value="">(where it stopped)</option>{goto}</select>'
        "</label><label>state patch (JSON) "
        '<textarea name="state" rows="3" placeholder="{}"></textarea></label>'
        "<button>Resume</button></form></section>"
        '<section class="controls surgery">'
        f'<form data-api="{api}/retry" class="retry"><label>goto '
        f'<select name="goto"><option value="">(where it ended)</option>{goto}</select>'
        "</label><label>state patch (JSON) "
        '<textarea name="state" rows="2" placeholder="{}"></textarea></label>'
        "<button>Retry</button></form>"
        f'<form data-api="{api}/rerun" class="rerun"><label>step '
        f'<select name="step">{goto}</select></label>'
        '<label>at event # <input name="seq" type="number" min="1" data-json></label>'
        "<button>Re-run step</button></form>"
        f'<form data-api="{api}/replay" class="inline"><button>Replay</button></form>'
        f'<form data-api="{api}/fork" class="fork"><label>from event # '
        '<input name="at" type="number" min="1" required data-json></label>'
        '<label>state patch (JSON) <textarea name="state" rows="2" placeholder="{}">'
        "</textarea></label><button>Fork</button></form></section>"
        '<pre id="report" hidden></pre>'
    )
    return (
        f'<script type="application/json" id="run-data">{data}</script>'
        f"<h2>Run <code>{run_id}</code> {_badge(record.status.value)}{marker}</h2>"
        f"<p>{escape(record.workflow)} version {escape(record.current_version)}, started "
        f"{_time(record.created_at)} by {escape(record.body.started_by or 'unknown')}</p>"
        f'<section class="graph-box">{graph}</section>'
        f"{_waiting_panel(record.run_id, info)}{controls}"
        '<section class="columns"><div><h3>Timeline</h3>'
        '<table id="timeline"><thead><tr><th>#</th><th>time</th><th>event</th><th>step</th>'
        f"<th>details</th></tr></thead><tbody>{timeline_rows(events)}</tbody></table></div>"
        '<div><h3>Step durations</h3><div id="durations"></div>'
        f'<h3>State</h3><pre id="state">{_json(record.body.state)}</pre>'
        f'<h3>Outputs</h3><pre id="outputs">{_json(record.results)}</pre>'
        f'<h3>Result</h3><pre id="result">{_json(record.body.output)}</pre></div></section>'
    )


def approvals_page(items: list[WaitInfo]) -> str:
    rows = "".join(
        f'<tr><td><a href="/dashboard/runs/{escape(i.run_id)}">{escape(i.run_id)}</a></td>'
        f"<td>{escape(i.workflow)}</td><td>{escape(i.step)}</td>"
        f"<td>{escape(i.question or '')}</td><td><code>{escape((i.digest or '')[:12])}</code>"
        f"</td><td>{_time(i.opened_at)}</td></tr>"
        for i in items
    )
    return (
        "<h2>Approvals waiting for you</h2>"
        '<table class="approvals"><thead><tr><th>run</th><th>workflow</th><th>step</th>'
        "<th>question</th><th>digest</th><th>since (UTC)</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=6>nothing to approve</td></tr>'}</tbody></table>"
    )
