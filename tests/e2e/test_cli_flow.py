"""The faas-cli-style flow through our own CLI: new → up -f (build + deploy) → invoke → ls →
describe → logs → secrets → rm, against a real daemon and real Docker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.daemon_fixtures import (
    DaemonProcess,
    daemon_factory,  # noqa: F401 - fixture
    docker_ids,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_new_up_invoke_ls_describe_logs_rm(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    daemon.env["LOCALFAAS_CACHE_DIR"] = str(tmp_path / "cache")
    project = tmp_path / "project"
    project.mkdir()
    stack = project / "stack.yml"

    out = daemon.cli("new", "greet", "--lang", "python3-http", "-f", str(stack))
    assert b"created" in out.stdout
    (project / "greet" / "handler.py").write_text(
        "import os\n\ndef handle(event, context):\n"
        "    print('greeting', event.body.decode(), flush=True)\n"
        "    return {'statusCode': 201, 'body': {'hello': event.body.decode(), 'env': os.environ.get('GREETING')}}\n"
    )
    # An OpenFaaS stack file with env substitution and an environment section.
    text = stack.read_text().replace(
        "image: greet:latest", "image: ${IMAGE_PREFIX:-localfaas-e2e}/greet:" + str(os.getpid())
    )
    text = text.replace(
        "lang: python3-http",
        "lang: python3-http\n    environment:\n      GREETING: hi\n    labels:\n      team: e2e",
    )
    stack.write_text(text)

    out = daemon.cli("up", "-f", str(stack))
    assert b"deployed greet" in out.stdout
    daemon.wait_available("greet", 1)

    out = daemon.cli("invoke", "greet", stdin=b"world")
    assert json.loads(out.stdout) == {"hello": "world", "env": "hi"}

    # Async through the embedded NATS: queue, follow the call, see the queue.
    out = daemon.cli("invoke", "greet", "--async", "--call-id", "e2e-call-1", stdin=b"later")
    assert b"e2e-call-1" in out.stderr

    def call_state() -> str:
        status = json.loads(daemon.cli("async", "status", "e2e-call-1", "--json").stdout)
        return str(status["state"])

    daemon.wait_for(lambda: call_state() == "succeeded", "the async call to succeed")
    assert "succeeded" in daemon.cli("async", "status", "e2e-call-1").stdout.decode()
    queues = json.loads(daemon.cli("async", "queues", "--json").stdout)
    assert [(q["name"], q["pending"]) for q in queues] == [("greet", 0)]
    missing = daemon.cli("async", "status", "no-such-call", check=False)
    assert missing.returncode == 3, missing.stderr

    listed = json.loads(daemon.cli("ls", "--json").stdout)
    assert [(f["name"], f["labels"]) for f in listed] == [("greet", {"team": "e2e"})]
    table = daemon.cli("ls").stdout.decode()
    assert table.splitlines()[0].split() == ["NAME", "NAMESPACE", "IMAGE", "INVOCATIONS", "READY"]
    assert "greet" in table and "1/1" in table

    described = daemon.cli("describe", "greet").stdout.decode()
    assert "Replicas:" in described and "1/1" in described and "team=e2e" in described

    daemon.wait_for(
        lambda: b"greeting world" in daemon.cli("logs", "greet").stdout, "the printed line in logs"
    )

    assert daemon.cli("secret", "create", "token", "--from-literal", "abc").returncode == 0
    secrets = json.loads(daemon.cli("secret", "ls", "--json").stdout)
    assert secrets == [{"name": "token", "namespace": "openfaas-fn"}]
    assert daemon.cli("secret", "rm", "token").returncode == 0
    assert json.loads(daemon.cli("ns", "ls", "--json").stdout) == ["openfaas-fn"]

    # Re-running up -f updates in place (PUT), as faas-cli deploy does.
    out = daemon.cli("up", "-f", str(stack))
    assert b"updated greet" in out.stdout

    assert daemon.cli("rm", "greet").returncode == 0
    instance = (daemon.state_dir / "instance-id").read_text().strip()
    daemon.wait_for(lambda: not docker_ids(instance), "containers removed")
    missing = daemon.cli("invoke", "greet", stdin=b"x", check=False)
    assert missing.returncode == 3 and b"not found" in missing.stderr


def test_cli_errors_have_exit_codes(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = daemon_factory()
    bad = daemon.cli("describe", "Nope", check=False)
    assert bad.returncode == 1 and b"400" in bad.stderr and b"invalid" in bad.stderr
    daemon.env["OPENFAAS_URL"] = "http://127.0.0.1:9"
    unreachable = daemon.cli("ls", "--gateway", "http://127.0.0.1:9", check=False)
    assert unreachable.returncode == 4 and b"cannot reach" in unreachable.stderr
    broken = tmp_path / "stack.yml"
    broken.write_text("functions:\n  Bad:\n    image: x\n")
    out = daemon.cli("deploy", "-f", str(broken), check=False)
    assert out.returncode == 1 and b"Bad" in out.stderr
    wrong = daemon.cli("ls", "--password", "wrong", check=False)
    assert wrong.returncode == 1 and b"401" in wrong.stderr
