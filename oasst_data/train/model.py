"""Load any causal LM through transformers, sized for the tokenizer with the markers added."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import ConfigError, OasstDataError
from ..tokenizer import local_folder_problem, not_found_message

log = logging.getLogger(__name__)

# Config fields that hold the dropout on the residual stream, by model family
# (GPT-NeoX/Falcon: hidden_dropout, GPT-2: resid_pdrop, BERT-like: hidden_dropout_prob, OPT: dropout).
RESIDUAL_DROPOUT_FIELDS = ("hidden_dropout", "resid_pdrop", "residual_dropout", "hidden_dropout_prob", "dropout")
# Config fields that hold the context length (positions), by model family: most, GPT-NeoX and
# Llama included: max_position_embeddings; GPT-2: n_positions; others: max_sequence_length, n_ctx, seq_length.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx", "seq_length")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class LoadedModel:
    model: object  # transformers.PreTrainedModel
    attn_implementation: str
    parameters: int
    embedding_parameters: int
    resized_from: int | None


def resolve_dtype(dtype: str) -> str:
    """'auto' -> bf16 on a GPU that supports it, else fp32; fp16/bf16 need a GPU."""
    cuda = torch.cuda.is_available()
    if dtype == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if dtype == "fp16" and not cuda:
        raise ConfigError("dtype fp16 (mixed precision) needs a CUDA GPU; pass --dtype fp32 on a CPU (bf16 works too with --deepspeed none)")
    return dtype


def choose_attention(requested: str, dtype: str) -> str:
    """'auto' -> flash_attention_2 when the package is installed and a GPU runs fp16/bf16, else sdpa."""
    if requested != "auto":
        if requested == "flash_attention_2" and not _flash_attention_available():
            raise ConfigError("attn_implementation flash_attention_2: the flash-attn package is not installed")
        return requested
    if dtype in ("fp16", "bf16") and torch.cuda.is_available() and _flash_attention_available():
        return "flash_attention_2"
    return "sdpa"


def _flash_attention_available() -> bool:
    try:
        from transformers.utils import is_flash_attn_2_available
    except ImportError:
        return False
    return bool(is_flash_attn_2_available())


def load_config(name_or_path: str):
    """The model's transformers config (no weights), or a one-line error."""
    from transformers import AutoConfig

    problem = local_folder_problem(name_or_path, "--model", "config.json")
    if problem is not None:
        raise OasstDataError(f"cannot load model config {name_or_path!r}: {problem}")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise OasstDataError(
            f"cannot load model config {name_or_path!r}: {not_found_message(name_or_path, error)}"
        ) from None


def context_length(config) -> tuple[int, str] | None:
    """(positions, config field) of the model's declared context, or None when the config has none.

    Learned position embeddings (GPT-2, OPT) fail on longer rows with an IndexError mid-run;
    rotary ones (GPT-NeoX, Llama) run but were not trained past it. Either way: no row longer.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in CONTEXT_FIELDS:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, getattr(text, "attribute_map", {}).get(name, name)  # GPT-2's own name: n_positions
    return None


def set_residual_dropout(config, value: float | None) -> str | None:
    """Set the model config's residual dropout field; returns its name (None when it has none)."""
    if value is None:
        return None
    for name in RESIDUAL_DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, value)
            return name
    log.warning("model type %r has no residual dropout setting; residual_dropout=%s is ignored", getattr(config, "model_type", "?"), value)
    return None


def load_model(
    name_or_path: str,
    vocab_size: int,
    pad_token_id: int,
    dtype: str = "fp32",
    eos_token_id: int | None = None,
    attn_implementation: str = "sdpa",
    residual_dropout: float | None = None,
    random_init: bool = False,
    seed: int | None = None,
) -> LoadedModel:
    """The model in `dtype` with embeddings of at least `vocab_size` rows.

    Embeddings grow (to a multiple of 8) only when the tokenizer is longer than them: Pythia's
    50,304 rows already hold the 50,282 tokens with markers, and shrinking would gain nothing.
    """
    from transformers import AutoModelForCausalLM

    config = load_config(name_or_path)
    set_residual_dropout(config, residual_dropout)
    config.use_cache = False
    # Models such as Llama build their embedding with padding_idx=pad_token_id: that row gets no
    # gradient (and starts at zero under random init). When the tokenizer pads with EOS, a token
    # every row holds, it must not become the padding row. The collator masks padding itself.
    if pad_token_id != eos_token_id:
        config.pad_token_id = pad_token_id
    torch_dtype = TORCH_DTYPES[dtype]
    kwargs = {"attn_implementation": attn_implementation, "dtype": torch_dtype}
    try:
        if random_init:
            if seed is not None:
                torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, config=config, **kwargs)
    except (OSError, ValueError) as error:
        raise OasstDataError(f"cannot load model {name_or_path!r}: {str(error).splitlines()[0]}") from None
    rows = model.get_input_embeddings().num_embeddings
    resized_from = None
    if vocab_size > rows:
        model.resize_token_embeddings(vocab_size, pad_to_multiple_of=8)
        resized_from = rows
        log.info("token embeddings resized from %d to %d rows for the added markers", rows, model.get_input_embeddings().num_embeddings)
    embedding = model.get_input_embeddings().weight.numel()
    return LoadedModel(
        model=model,
        attn_implementation=attn_implementation,
        parameters=sum(p.numel() for p in model.parameters()),
        embedding_parameters=embedding,
        resized_from=resized_from,
    )
