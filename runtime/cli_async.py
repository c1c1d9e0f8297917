"""`localfaas async ...`: status, cancel, dead letters and queue depth of async calls.

Lists print an aligned table on a terminal and, when piped, the same columns as tab-separated
lines without a header, with times as ISO 8601 UTC instead of ages. `--json` prints what the
gateway answered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runtime.cli import EXIT_OK, client_from, print_table

ClientOptions = Callable[..., None]

MAX_ERROR_CELL = 60  # characters of an error message in a terminal table
LIST_FORMAT = (
    "Lists print a table on a terminal; piped, the same columns as tab-separated lines "
    "without a header, times in ISO 8601 UTC. --json prints the gateway's JSON."
)


# -- formatting (pure) ---------------------------------------------------------------------------


def utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def age(ts: float | None, now: float) -> str:
    """`3m12s ago` for a past time, `in 12s` for a future one (a next attempt)."""
    if ts is None:
        return "-"
    return f"{span(now - ts)} ago" if now >= ts else f"in {span(ts - now)}"


def when(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{utc(ts)} ({age(ts, now)})"


def duration(started: float | None, finished: float | None) -> str:
    if started is None or finished is None:
        return "-"
    seconds = max(0.0, finished - started)
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def cell(value: Any, limit: int | None = None) -> str:
    """One table or TSV cell: None as '-', on one line, without tabs."""
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def print_rows(rows: Sequence[Sequence[str]], header: Sequence[str], *, tty: bool) -> None:
    if tty:
        print_table(rows, header)
    else:
        for row in rows:
            print("\t".join(row))


def _stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def _dump(value: Any) -> None:
    print(json.dumps(value, indent=2))


# -- verbs ---------------------------------------------------------------------------------------


def status_fields(status: dict[str, Any], now: float) -> list[tuple[str, str]]:
    fields: list[tuple[str, Any]] = [
        ("Call ID", status.get("callId")),
        ("Function", status.get("function")),
        ("Namespace", status.get("namespace")),
        ("State", status.get("state")),
        ("Attempts", status.get("attempts", 0)),
        ("Last status", status.get("lastStatus")),
        ("Last error", status.get("lastError")),
        ("Enqueued", when(status.get("enqueuedAt"), now)),
        ("Updated", when(status.get("updatedAt"), now)),
    ]
    if status.get("nextAttemptAt") is not None:
        fields.append(("Next attempt", when(status["nextAttemptAt"], now)))
    fields.append(("Replays", status.get("replays", 0)))
    if status.get("callbackUrl"):
        outcome = ", ".join(
            str(status[k]) for k in ("callbackState", "callbackStatus") if status.get(k)
        )
        fields.append(("Callback", status["callbackUrl"] + (f" ({outcome})" if outcome else "")))
    return [(key, cell(value)) for key, value in fields]


HISTORY_HEADER = ("ATTEMPT", "STARTED", "DURATION", "STATUS", "ERROR")


def history_rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (
            cell(h.get("attempt")),
            utc(h.get("startedAt")),
            duration(h.get("startedAt"), h.get("finishedAt")),
            cell(h.get("status")),
            cell(h.get("error")),
        )
        for h in status.get("history") or []
    ]


def cmd_status(args: argparse.Namespace) -> int:
    status = client_from(args).call_status(args.call_id)
    if args.json:
        _dump(status)
        return EXIT_OK
    fields = status_fields(status, time.time())
    width = max(len(key) for key, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {value}")
    rows = history_rows(status)
    if rows:
        print()
        print_table(rows, HISTORY_HEADER)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    status = client_from(args).cancel_call(args.call_id)
    if args.json:
        _dump(status)
    else:
        print(
            f"cancelled {status.get('callId', args.call_id)} "
            f"({status.get('function')}.{status.get('namespace')})"
        )
    return EXIT_OK


DLQ_HEADER = (
    "SEQ",
    "CALL ID",
    "NAME",
    "NAMESPACE",
    "ATTEMPTS",
    "STATUS",
    "DEAD",
    "REPLAYS",
    "ERROR",
)


def dead_letter_rows(
    letters: list[dict[str, Any]], now: float, *, tty: bool
) -> list[tuple[str, ...]]:
    return [
        (
            cell(d.get("seq")),
            cell(d.get("callId")),
            cell(d.get("function")),
            cell(d.get("namespace")),
            cell(d.get("attempts")),
            cell(d.get("lastStatus")),
            age(d.get("deadAt"), now) if tty else utc(d.get("deadAt")),
            cell(d.get("replays")),
            cell(d.get("lastError"), MAX_ERROR_CELL if tty else None),
        )
        for d in letters
    ]


def cmd_dlq_ls(args: argparse.Namespace) -> int:
    letters = client_from(args).list_dead_letters(
        args.namespace, args.name, after=args.after, limit=args.limit
    )
    if args.json:
        _dump(letters)
        return EXIT_OK
    tty = _stdout_is_tty()
    print_rows(dead_letter_rows(letters, time.time(), tty=tty), DLQ_HEADER, tty=tty)
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    status = client_from(args).replay_dead_letter(args.call_id)
    if args.json:
        _dump(status)
    else:
        print(
            f"replayed {status.get('callId', args.call_id)} "
            f"({status.get('function')}.{status.get('namespace')}): "
            f"{status.get('state')}, replays {status.get('replays', 0)}"
        )
    return EXIT_OK


QUEUES_HEADER = ("NAME", "NAMESPACE", "PENDING", "INFLIGHT", "RUNNING", "CONCURRENCY")


def cmd_queues(args: argparse.Namespace) -> int:
    queues = client_from(args).list_queues(args.namespace)
    if args.json:
        _dump(queues)
        return EXIT_OK
    keys = ("name", "namespace", "pending", "inFlight", "running", "concurrency")
    rows = [tuple(cell(q.get(k)) for k in keys) for q in queues]
    print_rows(rows, QUEUES_HEADER, tty=_stdout_is_tty())
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------


def _call_id(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("a call id is required")
    return value


def _all_namespaces_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="only this namespace (default: all)")


def _dlq_list_options(parser: argparse.ArgumentParser, client_options: ClientOptions) -> None:
    client_options(parser, namespace=False)
    _all_namespaces_option(parser)
    parser.add_argument("--name", help="only this function's dead letters")
    parser.add_argument("--after", type=int, metavar="SEQ", help="only those after this SEQ")
    parser.add_argument("--limit", type=int, help="at most this many")
    parser.add_argument("--json", action="store_true")


def add_async_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], client_options: ClientOptions
) -> None:
    parser = sub.add_parser(
        "async",
        help="status, cancel, dead letters and queues of async calls",
        epilog=LIST_FORMAT,
    )
    verbs = parser.add_subparsers(dest="async_cmd", required=True, metavar="COMMAND")

    status = verbs.add_parser("status", help="show a call's state and its attempts")
    client_options(status, namespace=False)
    status.add_argument("call_id", type=_call_id, metavar="CALL_ID")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cancel = verbs.add_parser("cancel", help="cancel a call that has not started yet")
    client_options(cancel, namespace=False)
    cancel.add_argument("call_id", type=_call_id, metavar="CALL_ID")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(func=cmd_cancel)

    dlq = verbs.add_parser(
        "dlq",
        help="list dead-lettered calls (default: ls) or replay one",
        description="Without a COMMAND, list dead-lettered calls (as `ls`).",
        epilog=LIST_FORMAT,
    )
    _dlq_list_options(dlq, client_options)
    dlq.set_defaults(func=cmd_dlq_ls)
    # Options given before `ls`/`replay` must survive: the sub-verbs leave unset ones out.
    dlq_verbs = dlq.add_subparsers(dest="dlq_cmd", metavar="COMMAND")
    ls = dlq_verbs.add_parser(
        "ls", help="list dead-lettered calls", argument_default=argparse.SUPPRESS
    )
    _dlq_list_options(ls, client_options)
    ls.set_defaults(func=cmd_dlq_ls)
    replay = dlq_verbs.add_parser(
        "replay", help="queue a dead-lettered call again", argument_default=argparse.SUPPRESS
    )
    client_options(replay, namespace=False)
    replay.add_argument("call_id", type=_call_id, metavar="CALL_ID")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_dlq_replay)

    queues = verbs.add_parser("queues", help="queued and running calls per function")
    client_options(queues, namespace=False)
    _all_namespaces_option(queues)
    queues.add_argument("--json", action="store_true")
    queues.set_defaults(func=cmd_queues)
