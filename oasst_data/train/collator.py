"""Pad a batch of shard rows to its longest row and turn the loss mask into labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .sampler import round_up

IGNORE_INDEX = -100  # what transformers' causal-LM loss skips


@dataclass(frozen=True)
class PadCollator:
    """Right-pads `input_ids` with the pad token; `labels` = input id where `loss_mask` is 1, else -100.

    The width is the batch's longest row (rounded up to `pad_to_multiple_of` when set), never a
    fixed max length. The model shifts labels itself, so `labels[t]` is the target of position t-1.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = round_up(max(len(row["input_ids"]) for row in rows), self.pad_to_multiple_of)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids = np.asarray(row["input_ids"], dtype=np.int64)
            n = len(ids)
            input_ids[i, :n] = ids
            attention_mask[i, :n] = 1
            labels[i, :n] = np.where(np.asarray(row["loss_mask"]) == 1, ids, IGNORE_INDEX)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
        }
