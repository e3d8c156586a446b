"""The audit log: who submitted, viewed, downloaded or deleted what, and when (JSON lines).

Entries name the user, the role, the token's id (never the token), the action, the job and the
answer; never a header, a token or a credential.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


class AuditLog:
    """Appends one JSON object per line to `path` (each line one write, so replicas on one host
    interleave whole lines).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, user: str, role: str, action: str, *, token_id: str | None = None, **detail: Any) -> None:
        if self.path is None:
            return
        entry = {
            "ts": round(time.time(), 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": user,
            "role": role,
            "token_id": token_id,
            "action": action,
            **{k: v for k, v in detail.items() if v is not None},
        }
        line = (json.dumps(entry, default=str) + "\n").encode()
        with _LOCK:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
