"""Loading the tokenizer, adding Open-Assistant's markers, and fingerprinting the result."""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OasstDataError
from .serialize import MARKERS

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "EleutherAI/pythia-12b-deduped"

# Files that define a tokenizer; hashed for the manifest so a build names exactly what it used.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)


class TokenizerUnavailableError(OasstDataError):
    """The tokenizer could not be loaded (offline and not cached, or a bad path)."""


@dataclass(frozen=True)
class LoadedTokenizer:
    """A fast Hugging Face tokenizer with the markers added, plus what identifies it."""

    tokenizer: object  # transformers.PreTrainedTokenizerFast
    name: str
    file_sha256: dict[str, str]
    added_tokens: dict[str, int]
    eos_token_id: int
    pad_token_id: int
    fingerprint: str

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def marker_id(self, marker: str) -> int:
        return self.added_tokens[marker]

    def describe(self) -> dict:
        """The manifest's description of this tokenizer."""
        return {
            "name": self.name,
            "files_sha256": dict(sorted(self.file_sha256.items())),
            "added_tokens": self.added_tokens,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
        }


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the full serialized fast tokenizer (vocab, merges, normalizer, added tokens).

    It depends only on what changes token ids, not on file layout or cache location, so the
    trainer can check that a model's tokenizer matches the one its shards were built with.
    """
    backend = tokenizer.backend_tokenizer
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()


def load_tokenizer(name_or_path: str = DEFAULT_TOKENIZER) -> LoadedTokenizer:
    """Load a fast tokenizer by hub name or local path and add the markers as special tokens.

    The markers are added in one fixed order (MARKERS), so their ids never depend on
    PYTHONHASHSEED (Open-Assistant added them through a set, and the ids moved).
    """
    from transformers import AutoTokenizer

    problem = local_folder_problem(name_or_path, "--tokenizer", "tokenizer.json")
    if problem is not None:
        raise TokenizerUnavailableError(f"cannot load tokenizer {name_or_path!r}: {problem}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except OSError as error:  # offline and not cached, missing path, or no tokenizer files there
        raise TokenizerUnavailableError(
            f"cannot load tokenizer {name_or_path!r}: {not_found_message(name_or_path, error)} "
            "-- if this machine is offline or the hub is unreachable, pass --tokenizer PATH "
            "(a local folder with tokenizer.json)"
        ) from None
    except ImportError as error:  # a tokenizer class that needs sentencepiece or protobuf
        raise OasstDataError(f"cannot load tokenizer {name_or_path!r}: a package it needs is missing: {error}") from None
    except Exception as error:  # noqa: BLE001 - damaged files: JSON errors, KeyError, the Rust library's bare Exception
        detail = (str(error).splitlines() or [""])[0]
        raise OasstDataError(
            f"cannot load tokenizer {name_or_path!r}: its files are damaged or not a tokenizer ({type(error).__name__}: {detail})"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerUnavailableError(f"tokenizer {name_or_path!r} has no fast (Rust) version")
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
    added = {marker: int(tokenizer.convert_tokens_to_ids(marker)) for marker in MARKERS}
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TokenizerUnavailableError(f"tokenizer {name_or_path!r} defines no EOS token")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos
    files = {}
    local = Path(name_or_path)
    folder = local if local.is_dir() else _cached_folder(tokenizer)
    if folder is not None:
        for name in _TOKENIZER_FILES:
            candidate = folder / name
            if candidate.is_file():
                files[name] = _sha256_file(candidate)
    return LoadedTokenizer(
        tokenizer=tokenizer,
        name=str(name_or_path),
        file_sha256=files,
        added_tokens=added,
        eos_token_id=int(eos),
        pad_token_id=int(pad),
        fingerprint=tokenizer_fingerprint(tokenizer),
    )


def local_folder_problem(name_or_path: str, option: str, needs: str) -> str | None:
    """Why `name_or_path`, a local path, is no folder to load from, and what to pass to `option`
    instead; None for a folder, or for a name that may be a Hub repo id.

    transformers sends any name that is not a folder to the Hub, so a misspelt local path was
    reported as a network problem, or as a malformed repo id. `needs` names the file the folder
    must hold (tokenizer.json, config.json).
    """
    path = Path(name_or_path)
    if path.is_dir():
        return None
    if path.is_file():
        return f"is a file: give the folder holding {needs} instead, such as {option} {path.parent}"
    if not _means_local(name_or_path):
        return None
    return f"no such folder{_missing_detail(path)}; pass {option} a local folder with {needs}, or a Hub name"


def not_found_message(name_or_path: str, hub_error: Exception) -> str:
    """Why loading `name_or_path` failed once the Hub (or its cache) had no such name. When it
    reads as a local path too, its first part being a folder here (`fixtures/tokenizr`), the
    missing folder comes first. Only now: `EleutherAI/x` stays a Hub name even where a folder
    EleutherAI/ happens to exist."""
    hub = str(hub_error).splitlines()[0] if str(hub_error) else type(hub_error).__name__
    first, slash, _ = name_or_path.partition("/")
    if slash and Path(first).is_dir():
        return f"no such local folder{_missing_detail(Path(name_or_path))}, and no such Hub name ({hub})"
    return hub


def _means_local(name_or_path: str) -> bool:
    """True when the name cannot be a Hub repo id: a path by its form, or no valid repo id."""
    if name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        return True
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return True
    return False


def _missing_detail(path: Path) -> str:
    """The first missing folder on the path, and a near name beside it (a typo is the usual cause)."""
    if str(path).startswith("~") and path.expanduser().is_dir():
        # A quoted ~, or one after `--tokenizer=`, reaches us unexpanded.
        return f" ('~' was not expanded: give the full path {path.expanduser()})"
    path = path.expanduser()
    missing = path
    for ancestor in reversed(path.parents):
        if not ancestor.is_dir():
            missing = ancestor
            break
    detail = "" if missing == path else f"{missing} does not exist"
    near = _near_name(missing)
    if near is not None:
        detail += ("; " if detail else "") + f"did you mean {near}?"
    return f" ({detail})" if detail else ""


def _near_name(missing: Path) -> str | None:
    try:
        names = [entry.name for entry in os.scandir(missing.parent) if entry.is_dir()]
    except OSError:
        return None
    matches = difflib.get_close_matches(missing.name, names, n=1, cutoff=0.8)
    return str(missing.parent / matches[0]) if matches else None


_LOADER_ONLY_KEYS = ("local_files_only", "is_local", "cache_dir", "revision", "_commit_hash", "token", "force_download", "proxies", "subfolder")


def save_tokenizer(loaded: LoadedTokenizer, folder: Path) -> dict[str, str]:
    """Save the tokenizer, markers included, for the shards it tokenized; {file name: sha256}.

    The files depend only on the tokenizer (not on where it was loaded from), so reruns stay
    byte-identical, and loading the folder gives back the same fingerprint.
    """
    # How it was loaded, not what it is: transformers keeps these among the init kwargs it saves,
    # so HF_HUB_OFFLINE=1 (local_files_only) or a local folder (is_local) changed the saved files.
    for key in _LOADER_ONLY_KEYS:
        loaded.tokenizer.init_kwargs.pop(key, None)
    try:
        loaded.tokenizer.save_pretrained(str(folder))
    except OSError:
        raise
    except Exception as error:  # the Rust tokenizers library reports a full disk as a bare Exception
        raise OasstDataError(f"{folder}: cannot save the tokenizer: {error}") from None
    return {path.name: _sha256_file(path) for path in sorted(folder.iterdir()) if path.is_file()}


def _cached_folder(tokenizer) -> Path | None:
    path = getattr(tokenizer, "name_or_path", None)
    if path and Path(path).is_dir():
        return Path(path)
    vocab_file = getattr(tokenizer, "vocab_file", None) or tokenizer.init_kwargs.get("tokenizer_file")
    if vocab_file and Path(vocab_file).exists():
        return Path(vocab_file).parent
    return None
