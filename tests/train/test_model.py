"""load_model: a tokenizer that pads with EOS must not turn EOS into a frozen padding row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from oasst_data.train.model import load_model  # noqa: E402

EOS = 2


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """Llama builds nn.Embedding(padding_idx=config.pad_token_id); GPT-NeoX has no padding row."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=EOS, pad_token_id=None,
    ).save_pretrained(folder)
    return str(folder)


def test_padding_with_eos_leaves_the_eos_embedding_trainable(tiny_llama):
    loaded = load_model(tiny_llama, vocab_size=64, pad_token_id=EOS, eos_token_id=EOS, random_init=True, seed=0)
    embedding = loaded.model.get_input_embeddings()
    assert embedding.padding_idx != EOS
    assert float(embedding.weight[EOS].detach().abs().sum()) > 0  # not zeroed at init
    ids = torch.tensor([[5, EOS, 7, EOS, 9]])  # EOS ends every turn of a row
    loaded.model(input_ids=ids, labels=ids).loss.backward()
    assert float(embedding.weight.grad[EOS].abs().sum()) > 0


def test_a_pad_token_of_its_own_is_still_recorded(tiny_llama):
    loaded = load_model(tiny_llama, vocab_size=64, pad_token_id=0, eos_token_id=EOS, random_init=True, seed=0)
    assert loaded.model.config.pad_token_id == 0
    assert loaded.model.get_input_embeddings().padding_idx == 0


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("./out/nonexistent", r"'./out/nonexistent': no such folder; pass --model a local folder with config.json, or a Hub name$"),
        ("out/tiny/config.json", r"is a file: give the folder holding config.json instead, such as --model out/tiny$"),
        ("/no/such/model", r"no such folder \(/no does not exist\)"),
    ],
)
def test_a_misspelt_local_model_path_is_no_hub_problem(tmp_path, monkeypatch, given, message):
    from oasst_data.errors import OasstDataError
    from oasst_data.train.model import load_config

    (tmp_path / "out" / "tiny").mkdir(parents=True)
    (tmp_path / "out" / "tiny" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OasstDataError, match=message) as raised:
        load_config(given)
    assert "huggingface.co" not in str(raised.value)


def test_a_model_name_starting_at_a_local_folder_is_tried_on_the_hub_first(tmp_path, monkeypatch):
    import transformers

    from oasst_data.errors import OasstDataError
    from oasst_data.train.model import load_config

    (tmp_path / "out" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    asked = []

    def from_pretrained(name, **kwargs):
        asked.append(name)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    with pytest.raises(OasstDataError, match=r"'out/tinny': no such local folder \(did you mean out/tiny\?\), and no such Hub name \(We couldn't"):
        load_config("out/tinny")
    assert asked == ["out/tinny"]
