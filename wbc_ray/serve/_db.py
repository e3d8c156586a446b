"""The service's database: job records and API tokens in SQLite (WAL), with versioned migrations.

One writer path: every change goes through `ServiceDB._write` (an IMMEDIATE transaction, so
concurrent writers queue on SQLite's lock instead of failing half-way), and only the Ingress
replicas write: job tasks report through the Zarr store (done flags) and their return value.
Readers never block the writer (WAL).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SetupError

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
ROLES = ("read", "submit", "admin")

# Versioned migrations: entry i takes the schema from version i to i + 1. Never edit a released
# step; append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        user TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        slide TEXT NOT NULL,          -- the name the client gave (shown), never the server path
        path TEXT NOT NULL,           -- where the service reads it
        upload INTEGER NOT NULL,      -- 1: the service owns the file (remove it with the job)
        fusion TEXT,
        info TEXT NOT NULL,           -- JSON: vendor, dimensions, mpp
        submitted_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT                   -- JSON
    );
    CREATE INDEX jobs_status_seq ON jobs (status, seq);
    CREATE INDEX jobs_user ON jobs (user);
    CREATE TABLE tokens (
        token_id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('read', 'submit', 'admin')),
        salt TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 2: reviews of tiles (the current decision per tile, every version in the history) and
    # reviewers' sign-offs of slides.
    """
    CREATE TABLE reviews (
        job_id TEXT NOT NULL,
        tile INTEGER NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('agree', 'benign', 'malignant', 'not_assessable')),
        model_call TEXT NOT NULL,     -- the call reviewed: benign, malignant or rejected
        label TEXT,                   -- the reviewer's class (NULL: not assessable)
        reason TEXT,
        reviewer TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (job_id, tile)
    );
    CREATE TABLE review_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        tile INTEGER NOT NULL,        -- -1: the slide's sign-off
        decision TEXT NOT NULL,
        label TEXT,
        reason TEXT,
        reviewer TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX review_history_job ON review_history (job_id, id);
    CREATE TABLE signoffs (
        job_id TEXT PRIMARY KEY,
        verdict TEXT NOT NULL,
        note TEXT,
        reviewer TEXT NOT NULL,
        at REAL NOT NULL
    )
    """,
)
# What a reviewer may decide about a tile, and the class each decision gives it.
DECISIONS = ("agree", "benign", "malignant", "not_assessable")


def reviewed_label(decision: str, model_call: str) -> str | None:
    """The tile's class after review: the models' call where agreed (none for a tile quality
    control rejected), the reviewer's class otherwise, None where not assessable.
    """
    if decision == "agree":
        return model_call if model_call in ("benign", "malignant") else None
    return None if decision == "not_assessable" else decision


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the user and role a token names (or the local user, auth off)."""

    user: str
    role: str
    token_id: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


LOCAL = Principal("local", "admin")  # auth off: the service is this machine's alone


def _hash(salt: str, secret: str) -> str:
    # Tokens are 32 random bytes: a salted SHA-256 is as strong as a slow hash here, and costs
    # microseconds per request instead of tens of milliseconds.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class ServiceDB:
    """Jobs and tokens of one service (`<results_dir>/service.db`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as c:
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise SetupError(
                    f"{self.path} was written by a newer wbc-ray (database schema {version}, this "
                    f"version knows {len(MIGRATIONS)}): upgrade wbc-ray, or give this one another "
                    "results folder (--results or WBC_RAY_RESULTS)"
                )
            for i in range(version, len(MIGRATIONS)):
                for stmt in filter(str.strip, MIGRATIONS[i].split(";")):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {i + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # ---- jobs ------------------------------------------------------------------------------
    def add_job(
        self,
        job_id: str,
        user: str,
        slide: str,
        path: str,
        upload: bool,
        fusion: str | None,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        now = time.time()
        with self._write() as c:
            seq = int(c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0])
            c.execute(
                "INSERT INTO jobs (job_id, seq, user, status, slide, path, upload, fusion, info,"
                " submitted_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, user, slide, path, int(upload), fusion, json.dumps(info), now, now),
            )
        return self.job(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _record(row)

    def jobs(self, user: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM jobs", ()  # type: tuple[str, tuple[Any, ...]]
        if user is not None:
            q, args = q + " WHERE user = ?", (user,)
        return [_record(r) for r in self._conn().execute(q + " ORDER BY seq", args)]

    def active(self) -> list[dict[str, Any]]:
        """Running jobs, then queued ones in queue order."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE status IN ('running', 'queued')"
            " ORDER BY status = 'queued', COALESCE(started_at, 0), seq"
        )
        return [_record(r) for r in rows]

    def recent_durations(self, n: int = 20) -> list[float]:
        """How long the last `n` finished jobs ran, in seconds."""
        rows = self._conn().execute(
            "SELECT finished_at - started_at FROM jobs WHERE status = 'done'"
            " AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (n,),
        )
        return [float(r[0]) for r in rows]

    def count(self, status: tuple[str, ...], user: str | None = None) -> int:
        marks = ",".join("?" * len(status))
        q = f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})"
        args: tuple[Any, ...] = status
        if user is not None:
            q, args = q + " AND user = ?", (*status, user)
        return int(self._conn().execute(q, args).fetchone()[0])

    def position(self, job_id: str) -> int:
        """How many queued jobs are ahead of this one."""
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"
                " AND seq < (SELECT seq FROM jobs WHERE job_id = ?)",
                (job_id,),
            )
            .fetchone()
        )
        return int(row[0])

    def claim_next(self, max_running: int) -> dict[str, Any] | None:
        """The oldest queued job, now running, if fewer than `max_running` run (atomic across
        replicas: the check and the claim are one transaction).
        """
        now = time.time()
        with self._write() as c:
            running = int(c.execute("SELECT COUNT(*) FROM jobs WHERE status = 'running'").fetchone()[0])
            if running >= max_running:
                return None
            row = c.execute("SELECT job_id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?), heartbeat_at = ?,"
                " updated_at = ?, attempts = attempts + 1 WHERE job_id = ?",
                (now, now, now, row[0]),
            )
        return self.job(row[0])

    def heartbeat(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        now = time.time()
        with self._write() as c:
            c.executemany(
                "UPDATE jobs SET heartbeat_at = ? WHERE job_id = ? AND status = 'running'",
                [(now, j) for j in job_ids],
            )

    def requeue_stale(self, older_than_s: float) -> list[str]:
        """Running jobs no replica has vouched for lately (the service was restarted, a replica
        died): queued again, ahead of newer jobs (they keep their place), to resume.
        """
        cutoff = time.time() - older_than_s
        with self._write() as c:
            rows = c.execute(
                "SELECT job_id FROM jobs WHERE status = 'running' AND COALESCE(heartbeat_at, 0) < ?",
                (cutoff,),
            ).fetchall()
            ids = [r[0] for r in rows]
            c.executemany(
                "UPDATE jobs SET status = 'queued', updated_at = ? WHERE job_id = ?",
                [(time.time(), j) for j in ids],
            )
        return ids

    def finish(
        self, job_id: str, status: str, result: dict[str, Any] | None = None, error: str | None = None
    ) -> bool:
        """Record a job's end, unless it was cancelled meanwhile; whether it was recorded."""
        assert status in ("done", "failed")
        now = time.time()
        with self._write() as c:
            cur = c.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ?"
                " WHERE job_id = ? AND status = 'running'",
                (status, json.dumps(result) if result is not None else None, error, now, now, job_id),
            )
        return cur.rowcount == 1

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Mark an active job cancelled; the record as it was before."""
        before = self.job(job_id)
        now = time.time()
        with self._write() as c:
            c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?"
                " WHERE job_id = ? AND status IN ('queued', 'running')",
                (now, now, job_id),
            )
        return before

    def remove(self, job_id: str) -> None:
        """Forget a job and its reviews (the audit log keeps who did what)."""
        with self._write() as c:
            for table in ("jobs", "reviews", "review_history", "signoffs"):
                c.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    # ---- reviews ---------------------------------------------------------------------------
    def set_review(
        self, job_id: str, tile: int, decision: str, model_call: str, reviewer: str, reason: str | None
    ) -> dict[str, Any]:
        """Record (or revise) a reviewer's decision on a tile; every version stays in the history."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
        label = reviewed_label(decision, model_call)
        now = time.time()
        with self._write() as c:
            c.execute(
                "INSERT INTO reviews (job_id, tile, decision, model_call, label, reason, reviewer, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, tile) DO UPDATE SET"
                " decision = excluded.decision, model_call = excluded.model_call, label = excluded.label,"
                " reason = excluded.reason, reviewer = excluded.reviewer, at = excluded.at",
                (job_id, tile, decision, model_call, label, reason, reviewer, now),
            )
            c.execute(
                "INSERT INTO review_history (job_id, tile, decision, label, reason, reviewer, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, tile, decision, label, reason, reviewer, now),
            )
        return self.reviews(job_id)[tile]

    def reviews(self, job_id: str) -> dict[int, dict[str, Any]]:
        """The current decision on each reviewed tile of a job."""
        rows = self._conn().execute("SELECT * FROM reviews WHERE job_id = ? ORDER BY tile", (job_id,))
        return {int(r["tile"]): {k: v for k, v in dict(r).items() if k != "job_id"} for r in rows}

    def review_history(self, job_id: str) -> list[dict[str, Any]]:
        """Every decision and sign-off ever made on a job, oldest first."""
        rows = self._conn().execute(
            "SELECT tile, decision, label, reason, reviewer, at FROM review_history WHERE job_id = ?"
            " ORDER BY id",
            (job_id,),
        )
        return [dict(r) for r in rows]

    def review_revision(self, job_id: str) -> int:
        """A number that grows with every review or sign-off of the job (0: never reviewed)."""
        row = self._conn().execute("SELECT MAX(id) FROM review_history WHERE job_id = ?", (job_id,))
        return int(row.fetchone()[0] or 0)

    def set_signoff(self, job_id: str, verdict: str, note: str | None, reviewer: str) -> dict[str, Any]:
        """A reviewer's own verdict on the slide (revisable; every version in the history)."""
        now = time.time()
        with self._write() as c:
            c.execute(
                "INSERT INTO signoffs (job_id, verdict, note, reviewer, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET verdict = excluded.verdict, note = excluded.note,"
                " reviewer = excluded.reviewer, at = excluded.at",
                (job_id, verdict, note, reviewer, now),
            )
            c.execute(
                "INSERT INTO review_history (job_id, tile, decision, label, reason, reviewer, at)"
                " VALUES (?, -1, 'signoff', ?, ?, ?, ?)",
                (job_id, verdict, note, reviewer, now),
            )
        signed = self.signoff(job_id)
        assert signed is not None
        return signed

    def signoff(self, job_id: str) -> dict[str, Any] | None:
        """The slide's sign-off, or None."""
        row = (
            self._conn()
            .execute("SELECT verdict, note, reviewer, at FROM signoffs WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return dict(row) if row is not None else None

    # ---- tokens ----------------------------------------------------------------------------
    def create_token(self, user: str, role: str) -> tuple[str, str]:
        """A new token for `user` in `role`: (its id, the token). Only a salted hash is kept; the
        token itself is shown once.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not user or len(user) > 64 or not all(ch.isalnum() or ch in "._-@" for ch in user):
            raise ValueError("user names are 1-64 letters, digits or . _ - @")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        with self._write() as c:
            c.execute(
                "INSERT INTO tokens (token_id, user, role, salt, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, user, role, salt, _hash(salt, secret), time.time()),
            )
        return token_id, f"wbc_{token_id}_{secret}"

    def tokens(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT token_id, user, role, created_at, revoked_at FROM tokens ORDER BY created_at"
        )
        return [dict(r) for r in rows]

    def revoke(self, token_id: str) -> bool:
        with self._write() as c:
            cur = c.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
        return cur.rowcount == 1

    def principal(self, token: str) -> Principal | None:
        """Who the token is, or None for anything not a live token of this service."""
        parts = token.split("_", 2)  # the secret may hold "_" itself
        if len(parts) != 3 or parts[0] != "wbc":
            return None
        _, token_id, secret = parts
        row = (
            self._conn()
            .execute(
                "SELECT user, role, salt, hash FROM tokens WHERE token_id = ? AND revoked_at IS NULL",
                (token_id,),
            )
            .fetchone()
        )
        if row is None or not secrets.compare_digest(_hash(row["salt"], secret), row["hash"]):
            return None
        return Principal(row["user"], row["role"], token_id)


def _record(row: sqlite3.Row) -> dict[str, Any]:
    rec = dict(row)
    rec["info"] = json.loads(rec["info"]) if rec.get("info") else {}
    rec["result"] = json.loads(rec["result"]) if rec.get("result") else None
    rec["upload"] = bool(rec["upload"])
    return rec
