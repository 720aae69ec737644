"""Loading and saving the tokenizer: a misspelt path, a damaged file or a full disk is one clear error, not a traceback."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from oasst_data.errors import OasstDataError
from oasst_data.tokenizer import load_tokenizer, save_tokenizer

from .conftest import FIXTURE_TOKENIZER


def test_a_disk_full_while_saving_the_tokenizer_is_a_clear_error(tmp_path):
    def save_pretrained(folder):
        # What the Rust tokenizers library raises: a bare Exception, not an OSError.
        raise Exception("No space left on device (os error 28)")

    loaded = SimpleNamespace(tokenizer=SimpleNamespace(save_pretrained=save_pretrained, init_kwargs={}))
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


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # More than one '/': no Hub repo id has that.
        ("shared/tokenizers/gpt-neox-20", r"no such folder \(did you mean shared/tokenizers/gpt-neox-20b\?\)"),
        ("shared/tokenizrs/gpt-neox-20b", r"no such folder \(shared/tokenizrs does not exist; did you mean shared/tokenizers\?\)"),
        ("./tokenizr", r"'./tokenizr': no such folder; pass --tokenizer a local folder with tokenizer.json, or a Hub name"),
        ("fixtures/tokenizer/tokenizer.json", r"is a file: give the folder holding tokenizer.json instead, such as --tokenizer fixtures/tokenizer$"),
    ],
)
def test_a_misspelt_local_tokenizer_path_is_no_hub_problem(tmp_path, monkeypatch, given, message):
    import shutil

    shutil.copytree(FIXTURE_TOKENIZER, tmp_path / "fixtures" / "tokenizer")
    (tmp_path / "shared" / "tokenizers" / "gpt-neox-20b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OasstDataError, match=message) as raised:
        load_tokenizer(given)
    assert "huggingface.co" not in str(raised.value) and "Repo id" not in str(raised.value) and "offline" not in str(raised.value)


def test_an_absolute_misspelt_tokenizer_path_names_the_near_folder(tmp_path):
    (tmp_path / "gpt-neox-20b").mkdir()
    with pytest.raises(OasstDataError, match=rf"'{tmp_path}/gpt-neox-20': no such folder \(did you mean {tmp_path}/gpt-neox-20b\?\)"):
        load_tokenizer(str(tmp_path / "gpt-neox-20"))


def test_a_hub_name_still_goes_to_the_hub(tmp_path, monkeypatch):
    """A plausible repo id is not taken for a local path: its failure keeps the offline hint."""
    import transformers

    asked = []

    def from_pretrained(name, **kwargs):
        asked.append(name)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.chdir(tmp_path)  # no local folder named EleutherAI
    with pytest.raises(OasstDataError, match=r"couldn't connect .* -- if this machine is offline"):
        load_tokenizer("EleutherAI/pythia-12b-deduped")
    assert asked == ["EleutherAI/pythia-12b-deduped"]


def test_a_name_starting_at_a_local_folder_is_tried_on_the_hub_first(tmp_path, monkeypatch):
    """`fixtures/tokenizr` may be a typo of a local path or a Hub name: the Hub (or its cache) is
    asked, and only when it has no such name is the missing local folder named first. A folder
    that happens to share a Hub organisation's name (./EleutherAI/) must not hide the Hub name."""
    import shutil

    import transformers

    shutil.copytree(FIXTURE_TOKENIZER, tmp_path / "fixtures" / "tokenizer")
    (tmp_path / "EleutherAI" / "my-finetune").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    real = transformers.AutoTokenizer.from_pretrained
    asked = []

    def from_pretrained(name, **kwargs):
        asked.append(name)
        if name == "EleutherAI/gpt-neox-20b":  # in the Hub cache, say
            return real(str(FIXTURE_TOKENIZER), **kwargs)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    assert load_tokenizer("EleutherAI/gpt-neox-20b").vocab_size > 0
    with pytest.raises(OasstDataError, match=r"'fixtures/tokenizr': no such local folder \(did you mean fixtures/tokenizer\?\), and no such Hub name \(We couldn't connect"):
        load_tokenizer("fixtures/tokenizr")
    assert asked == ["EleutherAI/gpt-neox-20b", "fixtures/tokenizr"]


def test_a_local_tokenizer_folder_still_loads(monkeypatch):
    monkeypatch.chdir(FIXTURE_TOKENIZER.parent)
    assert load_tokenizer("tokenizer").vocab_size > 0


def test_the_saved_files_do_not_depend_on_how_the_tokenizer_was_loaded(tmp_path):
    """Found by an audit: HF_HUB_OFFLINE=1 made transformers save `"local_files_only": true`
    (false without it), and `"is_local"` said where it came from: the build's tokenizer folder
    and manifest differed with the environment."""
    saved = {}
    for offline in (True, False):
        loaded = load_tokenizer(str(FIXTURE_TOKENIZER))
        loaded.tokenizer.init_kwargs.update(local_files_only=offline, is_local=offline)
        folder = tmp_path / str(offline)
        folder.mkdir()
        saved[offline] = save_tokenizer(loaded, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert not {"local_files_only", "is_local"} & set(config)
        assert load_tokenizer(str(folder)).fingerprint == loaded.fingerprint
    assert saved[True] == saved[False]
