"""Online learning: prompt/answer rows read from a JSONL file while it grows.

Each call of :meth:`JsonlStream.poll` returns the complete rows appended since the last
one (a line still being written waits for its newline). A malformed row is skipped with a
warning naming its line: a long online run should not die of one bad row. The trainer queues
them and :func:`mix_in` takes them into batches, each once, next to replayed examples.
"""

from __future__ import annotations

import json
import warnings
from collections import deque
from pathlib import Path

from lab.data import Example, to_example


class JsonlStream:
    """New :class:`lab.data.Example` rows of a growing JSONL file (Alpaca layout, or mapped
    with ``columns={"instruction": "question", ...}``)."""

    def __init__(self, path: str | Path, columns: dict[str, str] | None = None, tokenizer=None,
                 offset: int = 0, line: int = 0):
        self.path, self.columns, self.tokenizer = Path(path), columns or {}, tokenizer
        self.offset, self.line = offset, line  # bytes and lines consumed so far (checkpointed)

    def poll(self) -> list[Example]:
        """The rows completed since the last poll (none if the file does not exist yet)."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # only whole lines
        self.offset += end
        rows = []
        for raw in data[:end].splitlines():
            self.line += 1
            if not raw.strip():
                continue
            where = f"{self.path}:{self.line}"
            try:
                row = json.loads(raw.decode("utf-8"))
                row = {target: row.get(source) for target, source in self.columns.items()} | {
                    k: v for k, v in row.items() if k not in self.columns.values()}
                rows.append(to_example(row, self.tokenizer, where=where))
            except (ValueError, UnicodeDecodeError, AttributeError) as err:
                warnings.warn(f"stream row skipped: {where}: {err}", stacklevel=2)
        return rows

    def state_dict(self) -> dict:
        """What a checkpoint keeps to continue where it stopped."""
        return {"offset": self.offset, "line": self.line}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state_dict`'s)."""
        self.offset, self.line = state["offset"], state["line"]


def mix_in(queue: deque, anchors: list[Example], replay_ratio: float) -> list[Example]:
    """A batch the size of ``anchors``: up to ``1 - replay_ratio`` of it the oldest rows of
    ``queue`` (taken off it: each is trained on once), the rest replayed ``anchors``.

    >>> waiting = deque(["new"])
    >>> mix_in(waiting, ["a", "b"], replay_ratio=0.5), waiting
    (['new', 'a'], deque([]))
    """
    room = len(anchors) - round(len(anchors) * replay_ratio)
    fresh = [queue.popleft() for _ in range(min(len(queue), room))]
    return fresh + anchors[:len(anchors) - len(fresh)]
