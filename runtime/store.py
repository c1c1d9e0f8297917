"""Desired state in SQLite: functions, namespaces, secret metadata and a small key/value table.

Stdlib sqlite3, one connection, WAL with `synchronous=NORMAL` (a crash can lose the last
transactions but never corrupts the file; losing a just-made deploy is acceptable, the client
sees the error and retries). Every operation is a primary-key lookup or a tiny scan that
takes well under a millisecond, so async code calls these methods directly: handing them to a
thread would cost more than it saves and would need a lock around the one connection.

The schema version lives in `PRAGMA user_version`; `_MIGRATIONS[i]` brings version i to i+1.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.errors import Conflict, FunctionNotFound, InvalidSpec
from runtime.models import FunctionSpec
from runtime.names import DEFAULT_NAMESPACE, check_name

# Supplementary group ids for per-function secret folders: above the usual system and user
# ranges, below 65534 (nogroup), and the same for a function on every restart.
GID_MIN = 20000
GID_MAX = 59999

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE functions (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        generation INTEGER NOT NULL,
        replicas INTEGER NOT NULL,
        secrets_gid INTEGER NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE secrets (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE kv (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at REAL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class StoredFunction:
    spec: FunctionSpec
    generation: int
    replicas: int
    created_at: datetime
    updated_at: datetime
    secrets_gid: int  # the group that may read this function's secret files


@dataclass(frozen=True)
class StoredNamespace:
    name: str
    labels: Mapping[str, str]
    created_at: datetime


@dataclass(frozen=True)
class StoredSecret:
    namespace: str
    name: str
    created_at: datetime
    updated_at: datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def preferred_gid(namespace: str, name: str) -> int:
    """A function's first-choice gid: derived from its name, so it survives delete/redeploy."""
    span = GID_MAX - GID_MIN + 1
    return GID_MIN + zlib.crc32(f"{namespace}/{name}".encode()) % span


class Store:
    """The daemon's desired state. One instance per state dir; close() when done."""

    def __init__(self, path: Path | str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), so a
        # read-modify-write like a generation bump is never interleaved with another writer.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise InvalidSpec(
                f"state database {self.path} has schema version {version}, newer than this "
                f"localfaas understands ({SCHEMA_VERSION}): upgrade localfaas"
            )
        for target in range(version, SCHEMA_VERSION):
            with self._tx() as db:
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO namespaces (name, labels, created_at) VALUES (?, ?, ?)",
                (DEFAULT_NAMESPACE, json.dumps({"openfaas": "1"}), _ts(self._clock())),
            )

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- functions --------------------------------------------------------------------------

    def _row_to_function(self, row: sqlite3.Row) -> StoredFunction:
        return StoredFunction(
            spec=FunctionSpec.from_json(json.loads(row["spec"])),
            generation=int(row["generation"]),
            replicas=int(row["replicas"]),
            created_at=_dt(row["created_at"]),
            updated_at=_dt(row["updated_at"]),
            secrets_gid=int(row["secrets_gid"]),
        )

    def _allocate_gid(self, db: sqlite3.Connection, namespace: str, name: str) -> int:
        used = {int(r[0]) for r in db.execute("SELECT secrets_gid FROM functions")}
        span = GID_MAX - GID_MIN + 1
        if len(used) >= span:
            raise Conflict(f"no free secrets gid left in {GID_MIN}-{GID_MAX}")
        gid = preferred_gid(namespace, name)
        while gid in used:  # linear probing: deterministic for a given set of functions
            gid = GID_MIN + (gid - GID_MIN + 1) % span
        return gid

    def put_function(self, spec: FunctionSpec, *, replicas: int) -> int:
        """Create or replace a function; returns its generation (1, then +1 per update).

        Every update bumps the generation, even with an identical spec: `faas-cli deploy`
        after rebuilding `:latest` must roll the replicas onto the new image.
        """
        if replicas < 0:
            raise InvalidSpec(f"replicas must be 0 or more, got {replicas}")
        now = _ts(self._clock())
        body = json.dumps(spec.to_deployment_json(), sort_keys=True)
        with self._tx() as db:
            self._require_namespace(db, spec.namespace)
            row = db.execute(
                "SELECT generation FROM functions WHERE namespace = ? AND name = ?",
                (spec.namespace, spec.name),
            ).fetchone()
            if row is None:
                gid = self._allocate_gid(db, spec.namespace, spec.name)
                db.execute(
                    "INSERT INTO functions (namespace, name, spec, generation, replicas, "
                    "secrets_gid, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                    (spec.namespace, spec.name, body, replicas, gid, now, now),
                )
                return 1
            generation = int(row["generation"]) + 1
            db.execute(
                "UPDATE functions SET spec = ?, generation = ?, replicas = ?, updated_at = ? "
                "WHERE namespace = ? AND name = ?",
                (body, generation, replicas, now, spec.namespace, spec.name),
            )
            return generation

    def get_function(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> StoredFunction | None:
        row = self._db.execute(
            "SELECT * FROM functions WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        return None if row is None else self._row_to_function(row)

    def list_functions(self, namespace: str | None = None) -> list[StoredFunction]:
        if namespace is None:
            rows = self._db.execute("SELECT * FROM functions ORDER BY namespace, name")
        else:
            rows = self._db.execute(
                "SELECT * FROM functions WHERE namespace = ? ORDER BY name", (namespace,)
            )
        return [self._row_to_function(row) for row in rows]

    def delete_function(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """True if it existed."""
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM functions WHERE namespace = ? AND name = ?", (namespace, name)
            )
            return cursor.rowcount > 0

    def set_replicas(
        self, name: str, namespace: str = DEFAULT_NAMESPACE, *, replicas: int
    ) -> StoredFunction:
        """Change the desired replica count only (scaling never bumps the generation)."""
        if replicas < 0:
            raise InvalidSpec(f"replicas must be 0 or more, got {replicas}")
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE functions SET replicas = ?, updated_at = ? WHERE namespace = ? AND name = ?",
                (replicas, _ts(self._clock()), namespace, name),
            )
            if cursor.rowcount == 0:
                raise FunctionNotFound(f"function {name!r} not found in namespace {namespace!r}")
            row = db.execute(
                "SELECT * FROM functions WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone()
        return self._row_to_function(row)

    # -- namespaces -------------------------------------------------------------------------

    def _require_namespace(self, db: sqlite3.Connection, namespace: str) -> None:
        if db.execute("SELECT 1 FROM namespaces WHERE name = ?", (namespace,)).fetchone() is None:
            raise InvalidSpec(
                f"namespace {namespace!r} does not exist: create it first "
                "(POST /system/namespace/ or `localfaas namespace create`)"
            )

    def _row_to_namespace(self, row: sqlite3.Row) -> StoredNamespace:
        return StoredNamespace(
            name=row["name"], labels=json.loads(row["labels"]), created_at=_dt(row["created_at"])
        )

    def list_namespaces(self) -> list[StoredNamespace]:
        rows = self._db.execute("SELECT * FROM namespaces ORDER BY name")
        return [self._row_to_namespace(row) for row in rows]

    def get_namespace(self, name: str) -> StoredNamespace | None:
        row = self._db.execute("SELECT * FROM namespaces WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._row_to_namespace(row)

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None
    ) -> StoredNamespace:
        check_name(name, "namespace")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"namespace {name!r} already exists")
            db.execute(
                "INSERT INTO namespaces (name, labels, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(dict(labels or {}), sort_keys=True), _ts(self._clock())),
            )
        created = self.get_namespace(name)
        assert created is not None
        return created

    def update_namespace(self, name: str, labels: Mapping[str, str]) -> StoredNamespace | None:
        """Replace a namespace's labels; None if it does not exist."""
        with self._tx() as db:
            db.execute(
                "UPDATE namespaces SET labels = ? WHERE name = ?",
                (json.dumps(dict(labels), sort_keys=True), name),
            )
        return self.get_namespace(name)

    def delete_namespace(self, name: str) -> bool:
        """True if it existed. The default namespace and namespaces in use are kept (Conflict)."""
        if name == DEFAULT_NAMESPACE:
            raise Conflict(f"namespace {DEFAULT_NAMESPACE!r} cannot be deleted")
        with self._tx() as db:
            functions = db.execute(
                "SELECT COUNT(*) FROM functions WHERE namespace = ?", (name,)
            ).fetchone()[0]
            secrets = db.execute(
                "SELECT COUNT(*) FROM secrets WHERE namespace = ?", (name,)
            ).fetchone()[0]
            if functions or secrets:
                raise Conflict(
                    f"namespace {name!r} is not empty ({functions} functions, {secrets} "
                    "secrets): delete them first"
                )
            return db.execute("DELETE FROM namespaces WHERE name = ?", (name,)).rowcount > 0

    # -- secrets (metadata only; values are files, see runtime.secrets) ----------------------

    def _row_to_secret(self, row: sqlite3.Row) -> StoredSecret:
        return StoredSecret(
            namespace=row["namespace"],
            name=row["name"],
            created_at=_dt(row["created_at"]),
            updated_at=_dt(row["updated_at"]),
        )

    def create_secret(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> StoredSecret:
        check_name(name, "secret name")
        now = _ts(self._clock())
        with self._tx() as db:
            self._require_namespace(db, namespace)
            if db.execute(
                "SELECT 1 FROM secrets WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone():
                raise Conflict(f"secret {name!r} already exists in namespace {namespace!r}")
            db.execute(
                "INSERT INTO secrets (namespace, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (namespace, name, now, now),
            )
        created = self.get_secret(name, namespace)
        assert created is not None
        return created

    def update_secret(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> StoredSecret | None:
        """Mark a secret as updated now; None if it does not exist."""
        with self._tx() as db:
            db.execute(
                "UPDATE secrets SET updated_at = ? WHERE namespace = ? AND name = ?",
                (_ts(self._clock()), namespace, name),
            )
        return self.get_secret(name, namespace)

    def get_secret(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> StoredSecret | None:
        row = self._db.execute(
            "SELECT * FROM secrets WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        return None if row is None else self._row_to_secret(row)

    def list_secrets(self, namespace: str = DEFAULT_NAMESPACE) -> list[StoredSecret]:
        rows = self._db.execute(
            "SELECT * FROM secrets WHERE namespace = ? ORDER BY name", (namespace,)
        )
        return [self._row_to_secret(row) for row in rows]

    def delete_secret(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM secrets WHERE namespace = ? AND name = ?", (namespace, name)
            )
            return cursor.rowcount > 0

    # -- key/value (cron bookkeeping, webhook delivery ids, ...) ----------------------------

    def kv_put(self, scope: str, key: str, value: str, *, ttl_s: float | None = None) -> None:
        expires_at = None if ttl_s is None else self._clock().timestamp() + ttl_s
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv (scope, key, value, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at",
                (scope, key, value, expires_at),
            )

    def kv_add(self, scope: str, key: str, value: str, *, ttl_s: float | None = None) -> bool:
        """Insert unless a live entry exists; True if inserted (e.g. a first-seen delivery id)."""
        now = self._clock().timestamp()
        expires_at = None if ttl_s is None else now + ttl_s
        with self._tx() as db:
            db.execute(
                "DELETE FROM kv WHERE scope = ? AND key = ? AND expires_at <= ?", (scope, key, now)
            )
            cursor = db.execute(
                "INSERT OR IGNORE INTO kv (scope, key, value, expires_at) VALUES (?, ?, ?, ?)",
                (scope, key, value, expires_at),
            )
            return cursor.rowcount > 0

    def kv_get(self, scope: str, key: str) -> str | None:
        """The value, or None if missing or expired (expired entries read as absent)."""
        row = self._db.execute(
            "SELECT value FROM kv WHERE scope = ? AND key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (scope, key, self._clock().timestamp()),
        ).fetchone()
        return None if row is None else str(row[0])

    def kv_items(self, scope: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM kv WHERE scope = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (scope, self._clock().timestamp()),
        )
        return {str(r[0]): str(r[1]) for r in rows}

    def kv_delete(self, scope: str, key: str) -> bool:
        with self._tx() as db:
            return (
                db.execute("DELETE FROM kv WHERE scope = ? AND key = ?", (scope, key)).rowcount > 0
            )

    def kv_purge_expired(self) -> int:
        """Delete expired entries; returns how many."""
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (self._clock().timestamp(),),
            )
            return cursor.rowcount
