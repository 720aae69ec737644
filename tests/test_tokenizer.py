"""Saving the tokenizer beside the shards: a full disk is one clear error, not a traceback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oasst_data.errors import OasstDataError
from oasst_data.tokenizer import save_tokenizer


def test_a_disk_full_while_saving_the_tokenizer_is_a_clear_error(tmp_path):
    def save_pretrained(folder):
        # What the Rust tokenizers library raises: a bare Exception, not an OSError.
        raise Exception("No space left on device (os error 28)")

    loaded = SimpleNamespace(tokenizer=SimpleNamespace(save_pretrained=save_pretrained))
    with pytest.raises(OasstDataError, match=r"tok: cannot save the tokenizer: No space left on device \(os error 28\)"):
        save_tokenizer(loaded, tmp_path / "tok")
