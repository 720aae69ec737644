"""PadCollator: pad to the batch's longest row, labels -100 exactly where the loss mask is 0."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from oasst_data.tokenizer import load_tokenizer  # noqa: E402
from oasst_data.train.collator import IGNORE_INDEX, PadCollator  # noqa: E402
from oasst_data.train.shards import open_build  # noqa: E402

from ..conftest import FIXTURE_TOKENIZER  # noqa: E402


def row(ids, mask):
    return {"input_ids": np.array(ids, dtype=np.int32), "loss_mask": np.array(mask, dtype=np.uint8)}


def test_pads_to_longest_row_and_masks_labels():
    batch = PadCollator(pad_token_id=1)([row([5, 6, 7], [0, 1, 1]), row([8, 9, 10, 11, 12], [0, 0, 1, 0, 1])])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 1], [8, 9, 10, 11, 12]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100], [-100, -100, 10, -100, 12]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_pad_to_multiple_of_rounds_the_width_up():
    collate = PadCollator(pad_token_id=0, pad_to_multiple_of=8)
    assert collate([row([3] * 9, [1] * 9)])["input_ids"].shape == (1, 16)
    assert collate([row([3] * 8, [1] * 8)])["input_ids"].shape == (1, 8)


def test_labels_follow_the_mask_on_every_fixture_row(fixture_shards):
    loaded = load_tokenizer(str(FIXTURE_TOKENIZER))
    build = open_build(fixture_shards, loaded.fingerprint)
    rows = [build.train[i] for i in range(len(build.train))]
    batch = PadCollator(loaded.pad_token_id, 8)(rows)
    for i, item in enumerate(rows):
        n = len(item["input_ids"])
        labels = batch["labels"][i]
        trained = torch.from_numpy(item["loss_mask"].astype(bool))
        assert torch.equal(labels[:n][trained], torch.from_numpy(item["input_ids"].astype(np.int64))[trained])
        assert (labels[:n][~trained] == IGNORE_INDEX).all()
        assert (labels[n:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][i, n:] == loaded.pad_token_id).all()
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == build.train.trained_tokens
