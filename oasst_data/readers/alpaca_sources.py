"""Where an `--alpaca` source's records are: which files, in which format, of which split.

A source is a file, a folder (data files laid out as on the Hugging Face Hub, or written by
`save_to_disk`), or a Hub name. Local data is resolved to its files here and read by the
package's own readers (JSON by file and line; Parquet and Arrow with pyarrow, batch by batch), so
nothing is copied into the Hugging Face cache and a bad row is named by file and row. Which file
belongs to which split is decided as `datasets` decides it (its data-file patterns, or a README's
`configs:`), so a folder reads the same records through either. Only a Hub name that is not in the
local Hub cache, or a folder of formats the package does not read (CSV, text), goes through
`datasets.load_dataset`.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..display import is_utf8_text, visible
from ..errors import OasstDataError
from .hints import COMPRESSED_SUFFIXES

log = logging.getLogger(__name__)

DEFAULT_ALPACA_DATASET = "yahma/alpaca-cleaned"

_JSON_SUFFIXES = frozenset((".json", ".jsonl", ".ndjson"))
_TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
# Formats `datasets` reads as records; a folder is read as one of them only.
_RECORD_SUFFIXES = frozenset((".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".arrow"))
# Suffixes that name a local file: such a source that does not exist is a missing file, not a Hub name.
_DATA_SUFFIXES = _RECORD_SUFFIXES | COMPRESSED_SUFFIXES | {".txt"}
# A Hub dataset id: `name` or `owner/name`.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class DataFormat(str, enum.Enum):
    JSON = "json"  # a JSON array or JSON Lines, plain or compressed
    PARQUET = "parquet"
    ARROW = "arrow"  # Arrow IPC, stream (what save_to_disk writes) or file


@dataclass(frozen=True)
class DataFile:
    path: Path
    format: DataFormat


@dataclass
class ResolvedAlpaca:
    """What one `--alpaca` source reads.

    `files` in reading order; `hub_name` is set instead when only `datasets.load_dataset` can read
    the source (a Hub dataset not in the local Hub cache, or a folder of CSV files); its files
    are then the Arrow files `datasets` prepared, filled in once it has loaded them."""

    source: str
    files: list[DataFile] = field(default_factory=list)
    root: Path | None = None  # a dataset's folder: its files are named relative to it
    split: str | None = None  # None for a single file
    revision: str | None = None  # the Hub commit of a cached snapshot
    hub_name: str | None = None

    @property
    def is_file(self) -> bool:
        return self.root is None and self.hub_name is None

    def describe(self, sha256_file) -> dict:
        """The manifest's entry: enough to tell whether two builds read the same records."""
        if self.is_file:
            path = self.files[0].path
            return {"name": path.name, "kind": "alpaca", "size": path.stat().st_size, "sha256": sha256_file(path)}
        # A local folder by its name (as files are: no machine path); a Hub dataset by its id.
        local = self.root is not None and self.revision is None
        name = Path(os.path.abspath(self.root)).name if local else self.source  # `x/..` by its own name
        entry: dict = {"name": name, "kind": "alpaca-dataset", "split": self.split}
        if self.revision is not None:
            entry["revision"] = self.revision
        entry["files"] = [{"name": self._file_name(f.path), "size": f.path.stat().st_size, "sha256": sha256_file(f.path)} for f in self.files]
        return entry

    def _file_name(self, path: Path) -> str:
        """A data file relative to its dataset's folder; one `datasets` prepared in its cache by
        its name only (no machine path in a manifest)."""
        if self.root is not None:
            # As given, then with links resolved (a folder given through a symlink: `datasets`
            # lists its files by their real path; a Hub snapshot's files are links into blobs/).
            for base, file in ((os.path.abspath(self.root), os.path.abspath(path)), (os.path.realpath(self.root), os.path.abspath(path))):
                relative = os.path.relpath(file, base)
                if not relative.startswith(".."):
                    return Path(relative).as_posix()
        return path.name


def resolve_alpaca_source(source: str, split: str = "train") -> ResolvedAlpaca:
    """The files an `--alpaca` source reads, or a ResolvedAlpaca with hub_name for `datasets`."""
    path = Path(source)
    if path.is_file():
        return ResolvedAlpaca(source, [DataFile(path, file_format(path))])
    if path.is_dir():
        resolved = _resolve_folder(source, path, split)
        for data_file in resolved.files:
            # A name in another encoding cannot be written to the manifest or the quarantine (UTF-8):
            # refused by its name, as an input given on the command line is.
            if not is_utf8_text(str(data_file.path)):
                raise OasstDataError(f"{visible(str(data_file.path))}: the file name is not valid UTF-8 (written in another encoding?): rename it")
        return resolved
    if path.exists():
        raise OasstDataError(f"{source}: is not a regular file (a pipe or a device?); write it to a file first")
    if _looks_local(source):
        raise OasstDataError(f"{source}: no such file or folder")
    return _resolve_hub_name(source, split)


def file_format(path: Path) -> DataFormat:
    """A file's format by its suffix, else by its first bytes; anything else is read as JSON.

    A CSV or TSV file is refused: its columns have no types (a number-like instruction would come
    back as a number), and it is one `datasets` call away from JSON Lines."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in _TABLE_SUFFIXES:
        return DataFormat(_TABLE_SUFFIXES[suffix])
    if suffix in (".csv", ".tsv"):
        raise OasstDataError(
            f"{path}: a {suffix[1:].upper()} file is not read as Alpaca data; convert it to JSON Lines, e.g. "
            f"datasets.load_dataset('csv', data_files='{path.name}')['train'].to_json('alpaca.jsonl')"
        )
    if suffix not in _JSON_SUFFIXES:
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError:
            return DataFormat.JSON  # the JSON reader names the problem
        if head.startswith(b"PAR1"):
            return DataFormat.PARQUET
        if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
            return DataFormat.ARROW
    return DataFormat.JSON


def _looks_local(source: str) -> bool:
    """Whether a source that does not exist was meant as a local path rather than a Hub id."""
    if source.startswith(("/", "./", "../", "~", ".\\")) or "\\" in source or source in (".", ".."):
        return True
    if Path(source).suffix.lower() in _DATA_SUFFIXES:
        return True
    return not _HUB_ID.fullmatch(source)


# --- folders ------------------------------------------------------------------------------------


def _resolve_folder(source: str, folder: Path, split: str) -> ResolvedAlpaca:
    if _saved_to_disk(folder):
        return _resolve_saved(source, folder, split)
    by_split, options = _data_files_by_split(source, folder)
    chosen = choose_split(source, list(by_split), split)
    if not _has_configs(folder):
        _refuse_mixed_formats(source, folder, chosen)
    files = by_split[chosen]
    if options or not all(_read_here(f) for f in files):
        # CSV, a compression the file readers do not open (xz, bz2), or reading options in the
        # README's config (`field:`, `columns:`, `features:`): `datasets` reads those as it says.
        log.debug("%s: read by datasets (options: %s)", source, ", ".join(options) or "none")
        return ResolvedAlpaca(source, root=folder, split=chosen, hub_name=os.path.abspath(folder))
    return ResolvedAlpaca(source, [DataFile(f, file_format(f)) for f in files], root=folder, split=chosen)


def _refuse_mixed_formats(source: str, folder: Path, split: str) -> None:
    """`datasets` reads a folder laid out by its default patterns as one format, the most common,
    and drops the files of any other without a word: such a folder is refused instead."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        by_split = DataFilesDict.from_patterns(get_data_patterns(str(folder)), base_path=str(folder))
    except Exception:  # the builder resolved this folder already; nothing more to check
        return
    files = next((files for name, files in by_split.items() if str(name) == split), [])
    suffixes = sorted({_format_suffix(Path(str(f))) for f in files} & _RECORD_SUFFIXES)  # a LICENSE.txt is no data
    suffixes = sorted({".json" if suffix in _JSON_SUFFIXES else suffix for suffix in suffixes})
    if len(suffixes) > 1:
        raise OasstDataError(
            f"{source}: its files are of several formats ({', '.join(suffixes)}), and a folder is read as one "
            "format only: give the files to --alpaca one by one, or keep one format per folder"
        )


def _read_here(path: Path) -> bool:
    """Whether the package's own readers read this data file (JSON plain, gzip or zstd; Parquet; Arrow)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        return len(suffixes) > 1 and suffixes[-2] in _JSON_SUFFIXES
    return bool(suffixes) and (suffixes[-1] in _JSON_SUFFIXES or suffixes[-1] in _TABLE_SUFFIXES)


class NoDataFilesError(OasstDataError):
    """A folder in which `datasets` finds no data file."""


def _data_files_by_split(source: str, folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Split name -> files, as `datasets.load_dataset(folder)` would read them: its default
    patterns (`data/train-*`, `test.json`, ...) or the README's `configs:`; and the reading
    options that config sets (`field`, `columns`, `features`, ...), which only `datasets` applies."""
    import datasets

    # The builder only resolves the files here; its cache folder would take a lock in the user's
    # Hugging Face cache (which may be read-only), so it gets a temporary one. An absolute path:
    # `datasets` refuses "." as a dataset name.
    with tempfile.TemporaryDirectory(prefix="oasst-alpaca-") as cache:
        try:
            builder = datasets.load_dataset_builder(os.path.abspath(folder), cache_dir=cache)
        except ValueError as error:
            if "config name is missing" in str(error).lower():
                raise OasstDataError(_several_configs(source, folder)) from None
            raise OasstDataError(_not_a_dataset(source, error)) from None
        except Exception as error:  # datasets raises many types (no data files, bad README)
            raise NoDataFilesError(_not_a_dataset(source, error)) from None
    data_files = builder.config.data_files or {}
    by_split = {str(name): [Path(str(f)) for f in files] for name, files in data_files.items()}
    if not any(by_split.values()):
        raise NoDataFilesError(_not_a_dataset(source, "no data files"))
    return by_split, _reading_options(builder.config)


# BuilderConfig fields that say which files or which config, not how to read them.
_LOCATION_FIELDS = frozenset(("name", "version", "data_dir", "data_files", "description"))


def _reading_options(config) -> list[str]:
    """The fields of a builder config that differ from that config class's defaults."""
    import dataclasses

    try:
        default = type(config)(name=config.name, data_files=config.data_files, data_dir=config.data_dir)
        names = [f.name for f in dataclasses.fields(config) if f.name not in _LOCATION_FIELDS]
    except Exception:  # an unusual config class: nothing known about it
        return []
    return [name for name in names if getattr(config, name, None) != getattr(default, name, None)]


def _several_configs(source: str, folder: Path) -> str:
    import datasets

    try:
        names = ", ".join(datasets.get_dataset_config_names(str(folder)))
    except Exception:  # the names are a courtesy; the problem stays the same
        names = "see its README.md"
    return (
        f"{source}: the dataset has several configs ({names}) and --alpaca reads one: "
        "give the data files or folder of the config you want (its README.md lists them)"
    )


def _not_a_dataset(source: str, error: object) -> str:
    return (
        f"{source}: is a directory but not a dataset: {first_line(error)}"
        " -- pass a JSON or JSON Lines file, or a folder of data files or written by save_to_disk"
    )


def _has_configs(folder: Path) -> bool:
    """Whether the folder's README.md declares `configs:` (then it, not the layout, says which files are data)."""
    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    match = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return False
    try:
        card = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return False
    return isinstance(card, dict) and bool(card.get("configs"))


def _format_suffix(path: Path) -> str:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES | {".bz2", ".xz"}:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else "(no suffix)"


def _saved_to_disk(folder: Path) -> bool:
    """True for a folder `save_to_disk` wrote (the files `datasets.load_from_disk` looks for)."""
    return ((folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()) or (folder / "dataset_dict.json").is_file()


def _resolve_saved(source: str, folder: Path, split: str) -> ResolvedAlpaca:
    """A `save_to_disk` folder: its Arrow files, listed in state.json, read directly.

    `load_from_disk` would do the same, but fails on a DatasetDict with an empty split (datasets
    writes no Arrow file for it), even one that is not read."""
    chosen = None
    split_folder = folder
    dict_file = folder / "dataset_dict.json"
    try:
        if dict_file.is_file():
            splits = json.loads(dict_file.read_text(encoding="utf-8"))["splits"]
            chosen = choose_split(source, [str(name) for name in splits], split)
            split_folder = folder / chosen
        state = json.loads((split_folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"{type(error).__name__}: {error}" if isinstance(error, KeyError) else first_line(error)
        raise OasstDataError(f"cannot load Alpaca dataset folder {source!r} (written by save_to_disk): {reason}") from None
    files = [DataFile(split_folder / name, DataFormat.ARROW) for name in names]
    for data_file in files:
        if not data_file.path.is_file():
            raise OasstDataError(
                f"cannot load Alpaca dataset folder {source!r} (written by save_to_disk): {data_file.path} is missing"
            )
    return ResolvedAlpaca(source, files, root=folder, split=chosen or split)


def choose_split(source: str, names: list[str], wanted: str) -> str:
    """The split to read: the wanted one, or the only one there is. The others are named in a
    warning: their records are not read (the extractor makes its own validation split)."""
    if wanted in names:
        chosen = wanted
    elif len(names) == 1:
        (chosen,) = names
        log.warning("%s: no %r split, reading its only split %r", source, wanted, chosen)
    else:
        raise OasstDataError(f"{source}: no {wanted!r} split in this dataset (it has {', '.join(sorted(names))})")
    ignored = sorted(name for name in names if name != chosen)
    if ignored:
        log.warning("%s: reading split %r only; not read: %s", source, chosen, ", ".join(ignored))
    return chosen


# --- Hub names ----------------------------------------------------------------------------------


def _resolve_hub_name(source: str, split: str) -> ResolvedAlpaca:
    """Offline, a Hub dataset in the local Hub cache (`hf download`, `snapshot_download`) is read
    from there, by its files; otherwise `datasets.load_dataset` loads it (online, or from the
    cache `load_dataset` itself prepared)."""
    snapshot = _cached_snapshot(source)
    if snapshot is None:
        return ResolvedAlpaca(source, hub_name=source)
    try:
        resolved = _resolve_folder(source, snapshot, split)
    except NoDataFilesError:
        # A snapshot without its data files (a pruned cache; an older `datasets` kept the data in
        # its own downloads folder): `load_dataset` may still have it prepared.
        return ResolvedAlpaca(source, hub_name=source)
    resolved.revision = snapshot.name
    return resolved


def _cached_snapshot(name: str) -> Path | None:
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        return None  # online, load_dataset checks the Hub for a newer revision
    try:
        return Path(snapshot_download(name, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached (or no valid id): load_dataset's own cache may still have it
        return None


def first_line(error: object) -> str:
    """An error's first non-empty line (datasets' messages may start with a newline)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
