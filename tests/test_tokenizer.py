"""Saving the tokenizer beside the shards: a full disk is one clear error, not a traceback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oasst_data.errors import OasstDataError
from oasst_data.tokenizer import load_tokenizer, save_tokenizer

from .conftest import FIXTURE_TOKENIZER


def test_a_disk_full_while_saving_the_tokenizer_is_a_clear_error(tmp_path):
    def save_pretrained(folder):
        # What the Rust tokenizers library raises: a bare Exception, not an OSError.
        raise Exception("No space left on device (os error 28)")

    loaded = SimpleNamespace(tokenizer=SimpleNamespace(save_pretrained=save_pretrained))
    with pytest.raises(OasstDataError, match=r"tok: cannot save the tokenizer: No space left on device \(os error 28\)"):
        save_tokenizer(loaded, tmp_path / "tok")


@pytest.mark.parametrize(
    "damage",
    [
        ("tokenizer.json", lambda data: data[:1000]),  # JSONDecodeError
        ("tokenizer.json", lambda data: b"{}"),  # KeyError 'added_tokens'
        ("tokenizer_config.json", lambda data: b"{bad"),
    ],
)
def test_damaged_tokenizer_files_are_one_clear_error(tmp_path, damage):
    import shutil

    name, change = damage
    folder = tmp_path / "tok"
    shutil.copytree(FIXTURE_TOKENIZER, folder)
    (folder / name).write_bytes(change((folder / name).read_bytes()))
    with pytest.raises(OasstDataError, match="its files are damaged or not a tokenizer"):
        load_tokenizer(str(folder))
