"""JSONL run log: one JSON object a line, appended and flushed at once so a crash loses nothing."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..io import save_text


class JsonlLog:
    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint's step so the log matches the resumed run (and a
        last line cut short by a crash)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if _step(line) is not None and _step(line) <= step]
        save_text(self.path, "".join(line + "\n" for line in kept))


def _step(line: str) -> int | None:
    """The step of one log line; None for a line that is not a whole JSON object (a crash mid-write)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
