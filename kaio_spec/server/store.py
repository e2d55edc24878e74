"""SQLite (WAL) store of users, API keys, jobs, status history and telemetry.

Two connections per Store, each serialised by a lock: one for changes, each one transaction (so a
SIGKILL leaves either the old row or the new one), and a read-only one for queries, which in WAL
mode never wait for a change or a checkpoint (so the event loop may make short indexed reads). WAL
also lets `kaio server user add` write from another process while the server runs.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kaio_spec.errors import InvalidInput
from kaio_spec.server import auth
from kaio_spec.server.states import JobStatus, can_become

DB_FILE = "kaio.db"
MAX_VIEWS = 20_000  # jobs' JSON kept in memory at most (about 1 KB each); then all forgotten
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users(id),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    unique_job_name TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    job_name TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    failure_reason TEXT,
    instance_type TEXT NOT NULL,
    instance_count INTEGER NOT NULL,
    volume_size_gb INTEGER NOT NULL,
    entrypoint TEXT NOT NULL,
    image_uri TEXT,
    workflow TEXT,
    framework TEXT,
    framework_version TEXT,
    max_runtime_hours REAL NOT NULL,
    env_names TEXT NOT NULL,
    labels TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    data_deleted INTEGER NOT NULL DEFAULT 0,
    uploaded_at TEXT,
    etag TEXT,
    package_bytes INTEGER,
    base_package TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs(user_id, submitted_at);
-- GET /jobs?label=manifest=NAME (what the executor polls) and POST /jobs/stop's selector read
-- only that manifest's jobs, however many others the tenant has.
CREATE INDEX IF NOT EXISTS jobs_by_manifest ON jobs(user_id, json_extract(labels, '$.manifest'));
CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unique_job_name TEXT NOT NULL REFERENCES jobs(unique_job_name),
    status TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_job ON status_history(unique_job_name);
-- Kept after the retention sweep deletes a job's data (the seed's telemetry promise).
CREATE TABLE IF NOT EXISTS telemetry (
    unique_job_name TEXT NOT NULL REFERENCES jobs(unique_job_name),
    host TEXT NOT NULL,
    runtime_s REAL,
    exit_code INTEGER,
    cpu_seconds REAL,
    peak_cpu_percent REAL,
    peak_rss_bytes INTEGER,
    peak_gpu_util_percent REAL,
    peak_gpu_memory_mb REAL,
    samples TEXT,
    PRIMARY KEY (unique_job_name, host)
);
"""

# Columns added since a data dir could first be made: (table, column, type). Data dirs made before
# get them at start, so that an upgraded server keeps its jobs.
_ADDED_COLUMNS = (("jobs", "base_package", "TEXT"), ("telemetry", "samples", "TEXT"))

# A job as the API shows it (docs/protocol.md), made by SQLite's JSON functions: one query renders a
# tenant's whole listing, history included, with no Python object per field (GET /jobs is what
# every client polls). History rows come in id order: the index on unique_job_name keeps equal
# keys in rowid order.
_BOOL = "json(CASE WHEN {} THEN 'true' ELSE 'false' END)"
_JOB_JSON = f"""json_object(
    'unique_job_name', j.unique_job_name, 'job_name', j.job_name, 'status', j.status,
    'timestamp', j.submitted_at, 'start_time', j.start_time, 'end_time', j.end_time,
    'failure_reason', j.failure_reason,
    'status_history', (SELECT json_group_array(json_object('status', h.status, 'at', h.at))
                       FROM (SELECT status, at FROM status_history
                             WHERE unique_job_name = j.unique_job_name ORDER BY id) AS h),
    'instance_type', j.instance_type, 'instance_count', j.instance_count,
    'volume_size_gb', j.volume_size_gb, 'entrypoint', j.entrypoint, 'image_uri', j.image_uri,
    'workflow', j.workflow, 'env_names', json(j.env_names), 'labels', json(j.labels),
    'archived', {_BOOL.format("j.archived")}, 'data_deleted', {_BOOL.format("j.data_deleted")})"""

TELEMETRY_FIELDS = (
    "runtime_s",
    "exit_code",
    "cpu_seconds",
    "peak_cpu_percent",
    "peak_rss_bytes",
    "peak_gpu_util_percent",
    "peak_gpu_memory_mb",
    "samples",  # JSON: [[seconds, cpu %, rss bytes, gpu util %, gpu memory MB], ...]
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds and an explicit offset (Python 3.10 parses it too)."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobFilter:
    """Which of a user's jobs a listing shows (GET /jobs's local filters and paging)."""

    job_name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # each (key, value) must be among the job's labels
    limit: int | None = None
    after: str | None = None  # the unique_job_name the previous page ended with


class NotFound(LookupError):
    pass


def _parts(names: Sequence[str], size: int = 500) -> Iterator[tuple[str, ...]]:
    """`names` in parts of `size`: SQLite caps the number of parameters in one statement."""
    for i in range(0, len(names), size):
        yield tuple(names[i : i + size])


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


class Store:
    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_FILE
        self._lock = threading.RLock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        # executescript commits on its own, so it runs outside _tx; IF NOT EXISTS makes it safe
        # for two processes opening a fresh data dir at once.
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
        self._read_lock = threading.Lock()
        self._reader = self._connect()
        self._reader.execute("PRAGMA query_only=ON")
        # Each job's JSON (job_json) kept until the job changes: GET /jobs is polled far more
        # often than jobs change. Only this process changes jobs (one server per data dir; the
        # other commands change users and keys, and any change of those forgets them all).
        self._views: dict[str, str] = {}
        self._views_lock = threading.Lock()
        self._changes = 0

    def _add_missing_columns(self) -> None:
        for table, column, kind in _ADDED_COLUMNS:
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column in have:
                continue
            try:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process added it first
                    raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        db.row_factory = sqlite3.Row
        return db

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()

    @contextmanager
    def _tx(self, job: str | Collection[str] | None = None) -> Iterator[sqlite3.Connection]:
        """One transaction, which changes `job` only (or those jobs), or anything when None."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            with self._views_lock:
                self._changes += 1
                if job is None:
                    self._views.clear()
                else:
                    for name in (job,) if isinstance(job, str) else job:
                        self._views.pop(name, None)

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    # ---- users and keys ------------------------------------------------------------------------

    def add_user(self, name: str) -> tuple[dict, str]:
        """Create a user and a first API key; returns (user, key). The key is not stored."""
        if not isinstance(name, str) or not USER_NAME_RE.match(name):
            raise InvalidInput(
                f"user name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        user = {"id": "u-" + secrets.token_hex(8), "name": name, "created_at": iso(now())}
        new = auth.new_api_key()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise InvalidInput(f"user {name!r} already exists; use `kaio server key create`")
            db.execute(
                "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)",
                (user["id"], name, user["created_at"]),
            )
            self._insert_key(db, user["id"], new)
        return user, new.key

    def create_key(self, user_name: str) -> str:
        new = auth.new_api_key()
        with self._tx() as db:
            row = db.execute("SELECT id FROM users WHERE name = ?", (user_name,)).fetchone()
            if row is None:
                raise InvalidInput(f"no user named {user_name!r}; create it with `user add`")
            self._insert_key(db, row["id"], new)
        return new.key

    @staticmethod
    def _insert_key(db: sqlite3.Connection, user_id: str, new: auth.NewKey) -> None:
        db.execute(
            "INSERT INTO api_keys (user_id, key_hash, prefix, created_at) VALUES (?, ?, ?, ?)",
            (user_id, new.key_hash, new.display_prefix, iso(now())),
        )

    def revoke_key(self, prefix: str) -> dict:
        """Revoke the one active key whose display prefix starts with `prefix`."""
        if not prefix:
            raise InvalidInput("give the key's prefix, as `kaio server user list` shows it")
        with self._tx() as db:
            rows = db.execute(
                "SELECT k.id, k.prefix, u.name FROM api_keys k JOIN users u ON u.id = k.user_id "
                "WHERE k.revoked_at IS NULL AND substr(k.prefix, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
            if not rows:
                raise InvalidInput(f"no active key starts with {prefix!r}")
            if len(rows) > 1:
                found = ", ".join(r["prefix"] for r in rows)
                raise InvalidInput(f"{prefix!r} matches several keys ({found}); give more of it")
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (iso(now()), rows[0][0]))
        return {"prefix": rows[0]["prefix"], "user": rows[0]["name"]}

    def list_users(self) -> list[dict]:
        users = [dict(r) for r in self._query("SELECT * FROM users ORDER BY created_at, name")]
        for user in users:
            keys = self._query(
                "SELECT prefix, created_at, revoked_at FROM api_keys WHERE user_id = ? ORDER BY id",
                (user["id"],),
            )
            user["keys"] = [dict(k) for k in keys]
        return users

    def login(self, api_key: str) -> tuple[dict, int] | None:
        """(user, key id) for an active key, else None."""
        rows = self._query(
            "SELECT u.id, u.name, k.id AS key_id FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.key_hash = ? AND k.revoked_at IS NULL",
            (auth.hash_key(api_key),),
        )
        if not rows:
            return None
        return {"id": rows[0]["id"], "name": rows[0]["name"]}, rows[0]["key_id"]

    def key_is_active(self, user_id: str, key_id: int) -> bool:
        rows = self._query(
            "SELECT 1 FROM api_keys WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
            (key_id, user_id),
        )
        return bool(rows)

    # ---- jobs ----------------------------------------------------------------------------------

    def create_job(self, user_id: str, job_name: str, fields: dict[str, Any]) -> dict:
        """Insert a Pending job under a fresh unique_job_name (UTC ms timestamp + job name).

        Two jobs of the same name in the same millisecond get consecutive milliseconds, so the
        name keeps its format and stays unique across all tenants."""
        submitted = now()
        for bump in range(100_000):
            t = submitted + timedelta(milliseconds=bump)
            unique = t.strftime("%Y%m%d-%H%M%S") + f"{t.microsecond // 1000:03d}-{job_name}"
            row = {
                **fields,
                "unique_job_name": unique,
                "user_id": user_id,
                "job_name": job_name,
                "status": JobStatus.PENDING.value,
                "submitted_at": iso(submitted),
                "env_names": json.dumps(fields.get("env_names", [])),
                "labels": json.dumps(fields.get("labels", {})),
            }
            cols = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            try:
                with self._tx(unique) as db:
                    db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(row.values()))
                    db.execute(
                        "INSERT INTO status_history (unique_job_name, status, at) VALUES (?, ?, ?)",
                        (unique, JobStatus.PENDING.value, row["submitted_at"]),
                    )
            except sqlite3.IntegrityError:
                continue
            return self.get_job(unique)
        raise RuntimeError("could not find a unique job name")

    def get_job(self, unique: str, user_id: str | None = None) -> dict:
        """The job; NotFound if missing or (with user_id) someone else's: the two look the same."""
        sql = "SELECT * FROM jobs WHERE unique_job_name = ?"
        args: tuple[str, ...] = (unique,)
        if user_id is not None:
            sql, args = sql + " AND user_id = ?", (unique, user_id)
        rows = self._query(sql, args)
        if not rows:
            raise NotFound(unique)
        return self._job(rows[0])

    def job_json(self, unique: str, user_id: str) -> str:
        """The job as the API shows it, as JSON text; NotFound as get_job."""
        rows = self._query(
            f"SELECT {_JOB_JSON} FROM jobs j WHERE j.unique_job_name = ? AND j.user_id = ?",
            (unique, user_id),
        )
        if not rows:
            raise NotFound(unique)
        return rows[0][0]

    def jobs_json(
        self,
        user_id: str,
        include_archived: bool = False,
        max_reads: int | None = None,
        only: JobFilter | None = None,
    ) -> list[str] | None:
        """The user's jobs as the API shows them (JSON texts), newest first, those `only` lets
        through: only the jobs that changed since they were last shown are read again; None if
        more than max_reads are. NotFound when `only.after` is no job of the user's."""
        where, args = self._job_filter(user_id, include_archived, only or JobFilter())
        limit = f" LIMIT {int(only.limit)}" if only and only.limit else ""
        names = [
            r[0]
            for r in self._query(
                f"SELECT unique_job_name FROM jobs WHERE {where} "
                f"ORDER BY submitted_at DESC, rowid DESC{limit}",
                args,
            )
        ]
        with self._views_lock:
            seen = self._changes
            views = {name: self._views.get(name) for name in names}
        missing = [name for name, view in views.items() if view is None]
        if max_reads is not None and len(missing) > max_reads:
            return None
        for part in _parts(missing):
            sql = f"SELECT j.unique_job_name, {_JOB_JSON} FROM jobs j "
            rows = self._query(sql + f"WHERE j.unique_job_name IN ({_marks(part)})", part)
            views.update((name, view) for name, view in rows)
        with self._views_lock:
            # A job that changed while it was read may have been read as it was: keep nothing.
            if self._changes == seen:
                if len(self._views) + len(missing) > MAX_VIEWS:
                    self._views.clear()
                self._views.update((name, views[name] or "") for name in missing)
        return [views[name] or "" for name in names]

    def _job_filter(
        self, user_id: str, include_archived: bool, only: JobFilter
    ) -> tuple[str, tuple]:
        """The WHERE clause (and its parameters) of a listing."""
        where, args = ["user_id = ?"], [user_id]
        if not include_archived:
            where.append("archived = 0")
        if only.job_name is not None:
            where.append("job_name = ?")
            args.append(only.job_name)
        for key, value in only.labels:
            if key == "manifest":  # the index jobs_by_manifest's expression, as written there
                where.append("json_extract(labels, '$.manifest') = ?")
                args.append(value)
                continue
            where.append(
                "EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE key = ? AND value = ?)"
            )
            args += [key, value]
        if only.after is not None:
            found = self._query(
                "SELECT submitted_at, rowid FROM jobs WHERE unique_job_name = ? AND user_id = ?",
                (only.after, user_id),
            )
            if not found:
                raise NotFound(only.after)
            # Older in the listing's order (newest first): a page after the one that ended there.
            where.append("(submitted_at, rowid) < (?, ?)")
            args += [found[0][0], found[0][1]]
        return " AND ".join(where), tuple(args)

    def jobs_with_status(self, *statuses: JobStatus) -> list[dict]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._query(
            f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY uploaded_at, submitted_at",
            tuple(s.value for s in statuses),
        )
        return self._jobs(rows)

    def jobs_ended_before(self, cutoff: datetime) -> list[dict]:
        rows = self._query(
            "SELECT * FROM jobs WHERE data_deleted = 0 AND end_time IS NOT NULL AND end_time < ?",
            (iso(cutoff),),
        )
        return self._jobs(rows)

    def _job(self, row: sqlite3.Row) -> dict:
        return self._jobs([row])[0]

    @staticmethod
    def _jobs(rows: list[sqlite3.Row]) -> list[dict]:
        """Rows to the platform's own job dicts (what the API shows comes from job_json)."""
        jobs = [dict(r) for r in rows]
        for job in jobs:
            job["env_names"] = json.loads(job["env_names"])
            job["labels"] = json.loads(job["labels"])
            job["archived"] = bool(job["archived"])
            job["data_deleted"] = bool(job["data_deleted"])
        return jobs

    def update_job(self, unique: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx(unique) as db:
            db.execute(
                f"UPDATE jobs SET {sets} WHERE unique_job_name = ?", (*fields.values(), unique)
            )

    def transition(
        self,
        unique: str,
        new: JobStatus,
        telemetry: dict[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> bool:
        """Move the job to `new` if its lifecycle allows it (else False, nothing changed).

        Also sets start_time on InProgress and end_time on a final status, and any `fields`;
        `telemetry` (host -> TELEMETRY_FIELDS) is saved in the same transaction."""
        at = iso(now())
        with self._tx(unique) as db:
            row = db.execute(
                "SELECT status FROM jobs WHERE unique_job_name = ?", (unique,)
            ).fetchone()
            if row is None or not can_become(JobStatus(row["status"]), new):
                return False
            if new is JobStatus.IN_PROGRESS:
                fields.setdefault("start_time", at)
            if new.is_final:
                fields.setdefault("end_time", at)
            fields["status"] = new.value
            sets = ", ".join(f"{k} = ?" for k in fields)
            db.execute(
                f"UPDATE jobs SET {sets} WHERE unique_job_name = ?", (*fields.values(), unique)
            )
            db.execute(
                "INSERT INTO status_history (unique_job_name, status, at) VALUES (?, ?, ?)",
                (unique, new.value, at),
            )
            self._insert_telemetry(db, unique, telemetry or {})
        return True

    def owned_jobs(self, user_id: str, uniques: Sequence[str]) -> dict[str, dict]:
        """{unique_job_name: {"unique_job_name", "job_name", "status"}} for those of `uniques`
        that are the user's; another tenant's and missing ones are absent alike."""
        found: dict[str, dict] = {}
        for part in _parts(uniques):
            rows = self._query(
                "SELECT unique_job_name, job_name, status FROM jobs "
                f"WHERE user_id = ? AND unique_job_name IN ({_marks(part)})",
                (user_id, *part),
            )
            found.update((r["unique_job_name"], dict(r)) for r in rows)
        return found

    def live_jobs_labelled(self, user_id: str, labels: tuple[tuple[str, str], ...]) -> list[dict]:
        """The user's jobs (archived ones too) that have not ended and carry every (key, value)
        of `labels`: [{"unique_job_name", "job_name", "status"}], newest first."""
        where, args = self._job_filter(user_id, True, JobFilter(labels=labels))
        live = [s.value for s in JobStatus if not s.is_final]
        rows = self._query(
            f"SELECT unique_job_name, job_name, status FROM jobs WHERE {where} "
            f"AND status IN ({_marks(live)}) ORDER BY submitted_at DESC, rowid DESC",
            (*args, *live),
        )
        return [dict(r) for r in rows]

    def transition_all(self, uniques: Sequence[str], new: JobStatus) -> list[str]:
        """transition() for many jobs in ONE transaction (no fields, no telemetry): a stop of
        10,000 jobs is one commit, not 10,000. Returns the jobs moved, those whose lifecycle
        allowed it; the others are left as they were."""
        at = iso(now())
        fields = {"status": new.value}
        if new is JobStatus.IN_PROGRESS:
            fields["start_time"] = at
        if new.is_final:
            fields["end_time"] = at
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx(uniques) as db:
            moved = []
            for part in _parts(uniques):
                rows = db.execute(
                    "SELECT unique_job_name, status FROM jobs "
                    f"WHERE unique_job_name IN ({_marks(part)})",
                    part,
                )
                moved += [r[0] for r in rows if can_become(JobStatus(r[1]), new)]
            db.executemany(
                f"UPDATE jobs SET {sets} WHERE unique_job_name = ?",
                [(*fields.values(), unique) for unique in moved],
            )
            db.executemany(
                "INSERT INTO status_history (unique_job_name, status, at) VALUES (?, ?, ?)",
                [(unique, new.value, at) for unique in moved],
            )
        return moved

    # ---- telemetry -----------------------------------------------------------------------------

    @staticmethod
    def _insert_telemetry(
        db: sqlite3.Connection, unique: str, rows: dict[str, dict[str, Any]]
    ) -> None:
        for host, values in rows.items():
            cols = ("unique_job_name", "host", *TELEMETRY_FIELDS)
            vals = (unique, host, *(values.get(f) for f in TELEMETRY_FIELDS))
            db.execute(
                f"INSERT OR REPLACE INTO telemetry ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                vals,
            )

    def telemetry(self, unique: str) -> list[dict]:
        rows = self._query(
            "SELECT * FROM telemetry WHERE unique_job_name = ? ORDER BY host", (unique,)
        )
        return [dict(r) for r in rows]
