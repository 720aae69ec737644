"""The drop funnel: what was read, kept and dropped (by reason). Addable, JSON-serializable.

Invariants (tested): trees_read == trees_kept + sum(tree_drops);
candidates == threads + sum(thread_drops); records_read == records_used + bad_records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Funnel:
    records_read: int = 0  # lines or rows read
    bad_records: int = 0  # set aside (quarantined) instead of used
    trees_read: int = 0
    trees_kept: int = 0
    tree_drops: Counter = field(default_factory=Counter)
    candidates: int = 0  # root-to-leaf paths that match the SFT rule
    thread_drops: Counter = field(default_factory=Counter)
    threads: int = 0
    threads_by_split: Counter = field(default_factory=Counter)

    @property
    def records_used(self) -> int:
        return self.records_read - self.bad_records

    def __add__(self, other: "Funnel") -> "Funnel":
        return Funnel(
            self.records_read + other.records_read,
            self.bad_records + other.bad_records,
            self.trees_read + other.trees_read,
            self.trees_kept + other.trees_kept,
            self.tree_drops + other.tree_drops,
            self.candidates + other.candidates,
            self.thread_drops + other.thread_drops,
            self.threads + other.threads,
            self.threads_by_split + other.threads_by_split,
        )

    def check(self) -> list[str]:
        """The identities that must hold; returns the broken ones (empty when consistent)."""
        problems = []
        if self.trees_read != self.trees_kept + sum(self.tree_drops.values()):
            problems.append("trees_read != trees_kept + tree drops")
        if self.candidates != self.threads + sum(self.thread_drops.values()):
            problems.append("candidates != threads + thread drops")
        if self.threads != sum(self.threads_by_split.values()):
            problems.append("threads != train + validation")
        return problems

    def to_dict(self) -> dict:
        return {
            "records_read": self.records_read,
            "records_used": self.records_used,
            "bad_records": self.bad_records,
            "trees_read": self.trees_read,
            "trees_kept": self.trees_kept,
            "tree_drops": dict(sorted(self.tree_drops.items())),
            "candidates": self.candidates,
            "thread_drops": dict(sorted(self.thread_drops.items())),
            "threads": self.threads,
            "threads_by_split": dict(sorted(self.threads_by_split.items())),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Funnel":
        return cls(
            data["records_read"],
            data["bad_records"],
            data["trees_read"],
            data["trees_kept"],
            Counter(data["tree_drops"]),
            data["candidates"],
            Counter(data["thread_drops"]),
            data["threads"],
            Counter(data["threads_by_split"]),
        )


def what_removed_everything(funnel: dict) -> str:
    """The funnel of an empty output in one line: what was read and the biggest drop reasons."""
    drops = {f"tree {k}": v for k, v in funnel["tree_drops"].items()} | {f"thread {k}": v for k, v in funnel["thread_drops"].items()}
    for key in ("rows_dropped_overflow", "rows_dropped_no_trainable_tokens"):
        if funnel.get(key):
            drops[key.removeprefix("rows_dropped_").replace("_", " ")] = funnel[key]
    quarantined = funnel.get("quarantined", funnel.get("bad_records"))  # a build's funnel, or Funnel.to_dict()
    if quarantined:
        drops["bad record (quarantined)"] = quarantined
    if not drops:
        return f"{funnel['records_read']:,} records read, none dropped -- the inputs hold no conversation"
    biggest = ", ".join(f"{reason} {count:,}" for reason, count in sorted(drops.items(), key=lambda kv: -kv[1])[:4])
    return f"{funnel['records_read']:,} records read; dropped: {biggest} (`oasst-data filters` lists the filters)"
