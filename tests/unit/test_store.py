from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.errors import Conflict, FunctionNotFound, InvalidSpec
from runtime.models import FunctionSpec, Resources
from runtime.store import GID_MAX, GID_MIN, SCHEMA_VERSION, Store, preferred_gid


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with Store(tmp_path / "state" / "localfaas.db", clock=clock) as db:
        yield db


def _spec(name: str = "hello", namespace: str = "openfaas-fn", **fields: object) -> FunctionSpec:
    return FunctionSpec(name=name, namespace=namespace, image="example/hello:1", **fields)  # type: ignore[arg-type]


def test_fresh_database_pragmas_and_default_namespace(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [ns.name for ns in store.list_namespaces()] == ["openfaas-fn"]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Store(path) as store:
        store.put_function(_spec(), replicas=2)
    with Store(path) as again:
        stored = again.get_function("hello")
        assert stored is not None and stored.replicas == 2
        assert again.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(InvalidSpec, match="newer than this localfaas understands"):
        Store(path)


def test_put_function_creates_then_bumps_generation(store: Store, clock: Clock) -> None:
    spec = _spec(
        env_process="python3 index.py",
        env_vars={"A": "1"},
        labels={"com.openfaas.scale.min": "1"},
        annotations={"topic": "orders"},
        limits=Resources(memory="5Mi"),
        secrets=("api-key",),
        read_only_root_filesystem=True,
    )
    assert store.put_function(spec, replicas=1) == 1
    created = store.get_function("hello")
    assert created is not None
    assert created.spec == spec  # round-trips exactly (limits as sent, e.g. 5Mi)
    assert (created.generation, created.replicas) == (1, 1)
    assert created.created_at == created.updated_at == clock.now

    clock.advance(60)
    changed = FunctionSpec(name="hello", image="example/hello:2")
    assert store.put_function(changed, replicas=3) == 2
    # Same spec again: still a new generation (a rebuilt :latest must roll).
    assert store.put_function(changed, replicas=3) == 3
    updated = store.get_function("hello")
    assert updated is not None
    assert updated.spec.image == "example/hello:2"
    assert (updated.generation, updated.replicas) == (3, 3)
    assert updated.created_at == created.created_at
    assert updated.updated_at == clock.now
    assert updated.secrets_gid == created.secrets_gid  # stable across updates


def test_functions_by_namespace_and_delete(store: Store) -> None:
    store.create_namespace("team-a")
    store.put_function(_spec("b"), replicas=1)
    store.put_function(_spec("a"), replicas=1)
    store.put_function(_spec("a", "team-a"), replicas=1)
    assert [(f.spec.namespace, f.spec.name) for f in store.list_functions()] == [
        ("openfaas-fn", "a"),
        ("openfaas-fn", "b"),
        ("team-a", "a"),
    ]
    assert [f.spec.name for f in store.list_functions("team-a")] == ["a"]
    assert store.get_function("a", "nope") is None
    assert store.delete_function("a", "team-a") is True
    assert store.delete_function("a", "team-a") is False
    assert store.get_function("a", "team-a") is None


def test_set_replicas_keeps_generation(store: Store) -> None:
    store.put_function(_spec(), replicas=1)
    scaled = store.set_replicas("hello", replicas=0)
    assert (scaled.replicas, scaled.generation) == (0, 1)
    with pytest.raises(FunctionNotFound):
        store.set_replicas("missing", replicas=1)
    with pytest.raises(InvalidSpec):
        store.set_replicas("hello", replicas=-1)
    with pytest.raises(InvalidSpec):
        store.put_function(_spec(), replicas=-1)


def test_function_needs_an_existing_namespace(store: Store) -> None:
    with pytest.raises(InvalidSpec, match="namespace 'ghost' does not exist"):
        store.put_function(_spec(namespace="ghost"), replicas=1)
    assert store.list_functions() == []


def test_secret_gids_are_unique_stable_and_in_range(store: Store) -> None:
    gids = set()
    for i in range(200):
        store.put_function(_spec(f"fn-{i}"), replicas=0)
        stored = store.get_function(f"fn-{i}")
        assert stored is not None
        assert GID_MIN <= stored.secrets_gid <= GID_MAX
        gids.add(stored.secrets_gid)
    assert len(gids) == 200
    # Derived from the name: deleted and redeployed, a function gets its gid back.
    first = store.get_function("fn-0")
    assert first is not None and first.secrets_gid == preferred_gid("openfaas-fn", "fn-0")
    store.delete_function("fn-0")
    store.put_function(_spec("fn-0"), replicas=0)
    again = store.get_function("fn-0")
    assert again is not None and again.secrets_gid == first.secrets_gid


def test_gid_collisions_probe_to_the_next_free(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.store.preferred_gid", lambda namespace, name: GID_MAX)
    store.put_function(_spec("a"), replicas=0)
    store.put_function(_spec("b"), replicas=0)
    a, b = store.get_function("a"), store.get_function("b")
    assert a is not None and b is not None
    assert (a.secrets_gid, b.secrets_gid) == (GID_MAX, GID_MIN)  # wraps around the range


def test_namespaces(store: Store, clock: Clock) -> None:
    created = store.create_namespace("team-a", {"openfaas": "1", "owner": "x"})
    assert created.labels == {"openfaas": "1", "owner": "x"}
    assert created.created_at == clock.now
    with pytest.raises(Conflict):
        store.create_namespace("team-a")
    with pytest.raises(InvalidSpec):
        store.create_namespace("Bad_Name")
    assert [ns.name for ns in store.list_namespaces()] == ["openfaas-fn", "team-a"]
    updated = store.update_namespace("team-a", {"owner": "y"})
    assert updated is not None and updated.labels == {"owner": "y"}
    assert store.update_namespace("ghost", {}) is None

    store.put_function(_spec(namespace="team-a"), replicas=1)
    with pytest.raises(Conflict, match="not empty"):
        store.delete_namespace("team-a")
    store.delete_function("hello", "team-a")
    store.create_secret("key", "team-a")
    with pytest.raises(Conflict, match="not empty"):
        store.delete_namespace("team-a")
    store.delete_secret("key", "team-a")
    assert store.delete_namespace("team-a") is True
    assert store.delete_namespace("team-a") is False
    with pytest.raises(Conflict, match="cannot be deleted"):
        store.delete_namespace("openfaas-fn")


def test_secret_metadata(store: Store, clock: Clock) -> None:
    created = store.create_secret("api-key")
    assert (created.namespace, created.name, created.created_at) == (
        "openfaas-fn",
        "api-key",
        clock.now,
    )
    with pytest.raises(Conflict):
        store.create_secret("api-key")
    with pytest.raises(InvalidSpec):
        store.create_secret("../etc")
    with pytest.raises(InvalidSpec, match="does not exist"):
        store.create_secret("x", "ghost")
    clock.advance(5)
    updated = store.update_secret("api-key")
    assert updated is not None and updated.updated_at == clock.now
    assert updated.created_at == created.created_at
    assert store.update_secret("missing") is None
    store.create_secret("db-password")
    assert [s.name for s in store.list_secrets()] == ["api-key", "db-password"]
    assert store.delete_secret("api-key") is True
    assert store.delete_secret("api-key") is False
    assert store.get_secret("api-key") is None


def test_kv_with_expiry(store: Store, clock: Clock) -> None:
    store.kv_put("cron", "hello.openfaas-fn", "2025-01-01T12:00:00Z")
    store.kv_put("webhook", "delivery-1", "seen", ttl_s=60)
    assert store.kv_get("cron", "hello.openfaas-fn") == "2025-01-01T12:00:00Z"
    assert store.kv_get("webhook", "delivery-1") == "seen"
    assert store.kv_get("cron", "delivery-1") is None  # scopes are separate

    assert store.kv_add("webhook", "delivery-1", "again", ttl_s=60) is False  # still live
    clock.advance(61)
    assert store.kv_get("webhook", "delivery-1") is None  # expired reads as absent
    assert store.kv_items("webhook") == {}
    assert store.kv_add("webhook", "delivery-1", "again", ttl_s=60) is True  # expired: free
    assert store.kv_get("webhook", "delivery-1") == "again"

    store.kv_put("webhook", "delivery-2", "x", ttl_s=1)
    clock.advance(2)
    assert store.kv_purge_expired() == 1
    assert store.kv_items("webhook") == {"delivery-1": "again"}

    store.kv_put("cron", "hello.openfaas-fn", "later")  # upsert
    assert store.kv_get("cron", "hello.openfaas-fn") == "later"
    assert store.kv_delete("cron", "hello.openfaas-fn") is True
    assert store.kv_delete("cron", "hello.openfaas-fn") is False
    clock.advance(10**6)
    assert store.kv_purge_expired() == 1  # delivery-1; entries without expiry never go


def test_failed_transaction_rolls_back(store: Store) -> None:
    store.put_function(_spec(), replicas=1)
    with pytest.raises(sqlite3.IntegrityError), store._tx() as db:
        db.execute("UPDATE functions SET replicas = 9")
        db.execute(
            "INSERT INTO namespaces (name, labels, created_at) VALUES ('openfaas-fn', '{}', 'x')"
        )
    stored = store.get_function("hello")
    assert stored is not None and stored.replicas == 1
