"""`localfaas async ...` and `invoke --async` against a fake of the gateway's async contract:
output fields, --json, TTY tables vs piped TSV, and exit codes (0 ok, 1 error, 2 usage,
3 not found, 4 unreachable)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runtime import cli_async
from runtime.cli import main

if TYPE_CHECKING:
    from tests.unit.cli.conftest import FakeGateway

ROOT = Path(__file__).resolve().parents[3]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_async, "_stdout_is_tty", lambda: True)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- status ----------------------------------------------------------------------------------


def test_status_shows_fields_callback_and_attempts(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *fake_gateway.args("async", "status", "call-failed"))
    assert (code, err) == (0, "")
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in out.split("\n\n")[0].splitlines())
    )
    assert fields["Call ID"] == "call-failed"
    assert fields["Function"] == "resize"
    assert fields["Namespace"] == "team-a"
    assert fields["State"] == "failed"
    assert fields["Attempts"] == "2"
    assert fields["Last status"] == "503"
    assert fields["Last error"] == "upstream said 503"
    assert fields["Enqueued"].endswith(" ago)")
    assert fields["Enqueued"].startswith(cli_async.utc(fake_gateway.state.now - 300))
    assert "(in " in fields["Next attempt"]
    assert fields["Callback"] == "http://cb.test/r (delivered, 200)"

    history = out.split("\n\n")[1].splitlines()
    assert history[0].split() == ["ATTEMPT", "STARTED", "DURATION", "STATUS", "ERROR"]
    first, second = (line.split(None, 4) for line in history[1:])
    assert first[0] == "1" and first[2] == "250ms" and first[3] == "500"
    assert first[4] == "boom with tab"
    assert second[0] == "2" and second[2] == "1.50s" and second[3] == "503"
    assert first[1] == cli_async.utc(fake_gateway.state.now - 100)


def test_status_of_a_queued_call_has_no_history_table(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "status", "call-queued"))
    assert code == 0
    assert "State:" in out and "queued" in out
    assert "Callback:    http://cb.test/done\n" in out  # no outcome yet
    assert "Next attempt" not in out and "ATTEMPT" not in out


def test_status_json_is_the_gateway_object(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "status", "call-failed", "--json"))
    assert code == 0
    assert json.loads(out) == fake_gateway.state.calls["call-failed"]


def test_status_sends_basic_auth_and_unknown_id_exits_3(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *fake_gateway.args("async", "status", "nope"))
    assert (code, out) == (3, "")
    assert "404" in err and "no async call 'nope'" in err


@pytest.mark.parametrize("call_id", ["bad id!", "a/b", "x?y=1"])
def test_status_malformed_id_shows_the_servers_400(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], call_id: str
) -> None:
    code, _, err = run(capsys, *fake_gateway.args("async", "status", call_id))
    assert code == 1
    # The id reached the calls route as one segment (quoted), whatever it contains.
    assert f"400 call id {call_id!r} is invalid" in err


def test_empty_call_id_is_a_usage_error(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(fake_gateway.args("async", "status", ""))
    assert exc.value.code == 2
    assert "a call id is required" in capsys.readouterr().err
    assert fake_gateway.state.seen == []


def test_wrong_password_exits_1(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*fake_gateway.args("async", "status", "call-queued"), "--password", "wrong"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "401" in err


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_a_queued_call(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "cancel", "call-queued"))
    assert (code, out) == (0, "cancelled call-queued (hello.openfaas-fn)\n")
    assert [s.method for s in fake_gateway.seen("/system/async/calls/call-queued")] == ["DELETE"]
    assert fake_gateway.state.calls["call-queued"]["state"] == "cancelled"


def test_cancel_json(fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "cancel", "call-queued", "--json"))
    assert code == 0
    assert json.loads(out)["state"] == "cancelled"


@pytest.mark.parametrize("call_id", ["call-running", "call-failed"])
def test_cancel_conflict_exits_1_with_the_message(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], call_id: str
) -> None:
    state = fake_gateway.state.calls[call_id]["state"]
    code, out, err = run(capsys, *fake_gateway.args("async", "cancel", call_id))
    assert (code, out) == (1, "")
    # The JSON error body is reduced to its message.
    assert err == f"error: 409 call {call_id} is {state}\n"


def test_cancel_unknown_exits_3(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *fake_gateway.args("async", "cancel", "nope"))
    assert code == 3 and "no async call" in err


# -- dead letters ----------------------------------------------------------------------------


def test_dlq_piped_prints_tab_separated_lines_without_header(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    now = fake_gateway.state.now
    code, out, _ = run(capsys, *fake_gateway.args("async", "dlq"))
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        [
            "3",
            "dead-1",
            "resize",
            "team-a",
            "3",
            "500",
            cli_async.utc(now - 3700),
            "0",
            " ".join(["boom"] * 30),
        ],
        [
            "4",
            "dead-2",
            "hello",
            "openfaas-fn",
            "3",
            "-",
            cli_async.utc(now - 3700),
            "0",
            "connection refused by replica",
        ],
    ]


def test_dlq_on_a_terminal_is_a_table_with_ages(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], tty: None
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "dlq", "ls"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        *("SEQ", "CALL", "ID", "NAME", "NAMESPACE", "ATTEMPTS", "STATUS", "DEAD", "REPLAYS"),
        "ERROR",
    ]
    assert "\t" not in out
    assert lines[1].split()[:6] == ["3", "dead-1", "resize", "team-a", "3", "500"]
    assert "1h1m ago" in lines[1] or "1h2m ago" in lines[1]
    assert lines[1].endswith("...") and len(lines[1].split("  ")[-1]) <= 60


@pytest.mark.parametrize(
    "argv",
    [
        ("async", "dlq", "-n", "team-a", "--name", "resize", "--after", "2", "--limit", "5"),
        ("async", "dlq", "ls", "-n", "team-a", "--name", "resize", "--after", "2", "--limit", "5"),
        # Options before the sub-verb are kept.
        ("async", "dlq", "-n", "team-a", "--name", "resize", "ls", "--after", "2", "--limit", "5"),
    ],
)
def test_dlq_filters_reach_the_gateway(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args(*argv))
    assert code == 0
    [seen] = fake_gateway.seen("/system/async/dead-letters")
    assert seen.query == {"namespace": "team-a", "name": "resize", "after": "2", "limit": "5"}
    assert [line.split("\t")[1] for line in out.splitlines()] == ["dead-1"]


def test_dlq_without_filters_sends_no_query(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "dlq", "--json"))
    assert code == 0
    assert json.loads(out) == fake_gateway.state.dead_letters
    [seen] = fake_gateway.seen("/system/async/dead-letters")
    assert seen.query == {}


def test_dlq_replay(fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "dlq", "replay", "dead-1"))
    assert (code, out) == (0, "replayed dead-1 (resize.team-a): queued, replays 1\n")
    assert [s.method for s in fake_gateway.seen("/system/async/dead-letters/dead-1/replay")] == [
        "POST"
    ]
    assert [d["callId"] for d in fake_gateway.state.dead_letters] == ["dead-2"]


def test_dlq_replay_json(fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "dlq", "replay", "dead-2", "--json"))
    assert code == 0
    status = json.loads(out)
    assert (status["callId"], status["state"], status["replays"]) == ("dead-2", "queued", 1)


def test_dlq_replay_unknown_exits_3(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *fake_gateway.args("async", "dlq", "replay", "call-queued"))
    assert code == 3 and "no dead letter 'call-queued'" in err


# -- queues ----------------------------------------------------------------------------------


def test_queues_piped_and_filtered(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "queues"))
    assert code == 0
    assert out == "hello\topenfaas-fn\t4\t1\t1\t2\nresize\tteam-a\t0\t0\t0\t-\n"
    code, out, _ = run(capsys, *fake_gateway.args("async", "queues", "-n", "team-a"))
    assert (code, out) == (0, "resize\tteam-a\t0\t0\t0\t-\n")
    assert [s.query for s in fake_gateway.seen("/system/async/queues")] == [
        {},
        {"namespace": "team-a"},
    ]


def test_queues_on_a_terminal_and_json(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], tty: None
) -> None:
    code, out, _ = run(capsys, *fake_gateway.args("async", "queues"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "NAMESPACE",
        "PENDING",
        "INFLIGHT",
        "RUNNING",
        "CONCURRENCY",
    ]
    assert lines[1].split() == ["hello", "openfaas-fn", "4", "1", "1", "2"]
    code, out, _ = run(capsys, *fake_gateway.args("async", "queues", "--json"))
    assert json.loads(out) == fake_gateway.state.queues


# -- unreachable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("async", "status", "c1"),
        ("async", "cancel", "c1"),
        ("async", "dlq"),
        ("async", "dlq", "replay", "c1"),
        ("async", "queues"),
    ],
)
def test_unreachable_gateway_exits_4(
    closed_port_url: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *argv, "-g", closed_port_url, "--password", "x")
    assert (code, out) == (4, "")
    assert f"cannot reach the gateway at {closed_port_url}" in err


# -- invoke --async --------------------------------------------------------------------------


def test_invoke_async_sends_callback_and_call_id_and_prints_the_id(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"payload")))
    argv = fake_gateway.args(
        "invoke", "hello", "--async", "--callback-url", "http://cb.test/x", "--call-id", "mine-1"
    )
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert "call id mine-1" in err
    [seen] = fake_gateway.seen("/async-function/hello")
    assert seen.method == "POST"
    assert seen.headers["X-Callback-Url"] == "http://cb.test/x"
    assert seen.headers["X-Call-Id"] == "mine-1"


def test_invoke_async_prints_the_generated_call_id(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(capsys, *fake_gateway.args("invoke", "hello", "--async"))
    assert code == 0 and "call id generated-1" in err
    [seen] = fake_gateway.seen("/async-function/hello")
    assert "X-Callback-Url" not in seen.headers and "X-Call-Id" not in seen.headers


def test_callback_url_without_async_is_a_usage_error(
    fake_gateway: FakeGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    argv = fake_gateway.args("invoke", "hello", "--callback-url", "http://cb.test/x")
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--callback-url needs --async" in err
    assert fake_gateway.state.seen == []


# -- the real entry point ----------------------------------------------------------------------


def test_exit_code_and_piped_output_of_the_process(fake_gateway: FakeGateway) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALFAAS_", "OPENFAAS_"))}
    cmd = [sys.executable, "-m", "runtime.cli"]
    done = subprocess.run(
        [*cmd, *fake_gateway.args("async", "status", "nope")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 3 and b"no async call" in done.stderr
    done = subprocess.run(
        [*cmd, *fake_gateway.args("async", "queues", "-n", "team-a")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (0, b"resize\tteam-a\t0\t0\t0\t-\n")


# -- formatting --------------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (NOW, "0s ago"),
        (NOW - 59.9, "59s ago"),
        (NOW - 60, "1m0s ago"),
        (NOW - 3599, "59m59s ago"),
        (NOW - 3600 - 120, "1h2m ago"),
        (NOW - 86400 * 3 - 3600 * 5, "3d5h ago"),
        (NOW + 12, "in 12s"),
        (None, "-"),
    ],
)
def test_age(ts: float | None, text: str) -> None:
    assert cli_async.age(ts, NOW) == text


def test_utc_duration_and_cells() -> None:
    assert cli_async.utc(NOW) == "2023-11-14T22:13:20Z"
    assert cli_async.when(NOW - 5, NOW) == "2023-11-14T22:13:15Z (5s ago)"
    assert cli_async.duration(NOW, NOW + 0.0123) == "12ms"
    assert cli_async.duration(NOW, NOW + 2) == "2.00s"
    assert cli_async.duration(NOW, None) == "-"
    assert cli_async.cell(None) == cli_async.cell("") == "-"
    assert cli_async.cell("a\tb\nc") == "a b c"
    assert cli_async.cell("x" * 10, 6) == "xxx..."
