"""Alpaca instruction data: a JSON array or JSON Lines file, or a Hugging Face dataset.

The prompt is `instruction` when `input` is empty, else `instruction + "\\n" + input`; the
answer is `output` (Open-Assistant's `alpaca` loader). A missing `input` counts as empty.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..errors import BadRecordError, ConfigError, OasstDataError
from ..quarantine import BadRecordHandler
from ..records import AlpacaRecord
from .files import iter_lines, names_json_lines
from .hints import OASST_ARRAY_AS_ALPACA_HINT, OASST_AS_ALPACA_HINT, compressed_reason, looks_like_oasst, pretty_printed_hint
from .jsonarray import NonStandardElement, iter_json_array, starts_with_array
from .oasst import _describe_decode_error, _lone_surrogate_escape, check_utf8, log_blank_lines, log_empty_file

log = logging.getLogger(__name__)

DEFAULT_ALPACA_DATASET = "yahma/alpaca-cleaned"
_FILE_SUFFIXES = (".json", ".jsonl", ".gz", ".zst", ".zstd")
_record_decoder = msgspec.json.Decoder(AlpacaRecord)
# The top-level keys of a line, values left undecoded: to name fields the format does not use.
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ALPACA_FIELDS = frozenset(("instruction", "input", "output"))
# Only a file whose first character is '[' is read as a JSON array (then anything after its
# closing ']' is an error). In JSON Lines, a line holding an array is one bad record, not unpacked:
# the format is one object a line, and guessing would hide a file written wrongly.
_ARRAY_LINE_HINT = " (JSON Lines hold one object a line; an array on a line is not unpacked)"
# A dataset's rows have no file to give as an input: the hint names what the inputs read.
_OASST_ROW_HINT = " (an Open-Assistant record? Open-Assistant data is read from export files given as inputs, not with --alpaca)"


@dataclass(slots=True)
class LocatedAlpaca:
    record: AlpacaRecord
    source: str
    line: int
    raw: bytes | None


def _lone_surrogate(record: AlpacaRecord) -> str | None:
    """Python's json accepts escapes such as "\\ud800" that are no Unicode text; say where one is."""
    for name in ("instruction", "input", "output"):
        value = getattr(record, name)
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"lone surrogate {value[error.start]!r} in `{name}` (not valid Unicode text)"
    return None


def alpaca_prompt(record: AlpacaRecord) -> str:
    if record.input:
        return f"{record.instruction}\n{record.input}"
    return record.instruction


class AlpacaReader:
    """Streams LocatedAlpaca records from one source (file, local dataset folder, or hub name)."""

    def __init__(self, source: str, handler: BadRecordHandler | None = None, split: str = "train"):
        if not str(source).strip():  # an unset shell variable, most likely: never a silent download
            raise ConfigError("--alpaca got an empty source; give a file, a dataset folder, a hub name, or 'alpaca' for " + DEFAULT_ALPACA_DATASET)
        self.source = DEFAULT_ALPACA_DATASET if source in ("alpaca", "default") else source
        self.handler = handler or BadRecordHandler()
        self.split = split
        self.records_read = 0
        self.bad_records = 0
        self.unused_fields: Counter[str] = Counter()  # fields other than instruction/input/output

    def __iter__(self) -> Iterator[LocatedAlpaca]:
        path = Path(self.source)
        if path.is_file():
            yield from self._from_file(path, self.source)
        elif path.suffix.lower() in _FILE_SUFFIXES and not path.exists():
            raise OasstDataError(f"{self.source}: no such file")
        elif path.exists() and not path.is_dir():
            raise OasstDataError(f"{self.source}: is not a regular file (a pipe or a device?); write it to a file first")
        else:
            yield from self._from_dataset()
        if self.unused_fields:
            # Variants of the format add fields (a chat "history", a "system" prompt): they are
            # not part of the prompt or the answer, so say they were dropped.
            counts = ", ".join(
                f"{name} ({count:,} record{'' if count == 1 else 's'})" for name, count in sorted(self.unused_fields.items())
            )
            log.warning("%s: fields the Alpaca format does not use were ignored: %s", self.source, counts)

    def _from_file(self, path: Path, name: str) -> Iterator[LocatedAlpaca]:
        read_before = self.records_read
        # A .jsonl name says JSON Lines: a first line that opens an array is then one bad line,
        # not the whole file read as an array that breaks at line 2.
        if not names_json_lines(path) and starts_with_array(path):
            yield from self._from_array(path, name)
        else:
            yield from self._from_lines(path, name)
        if self.records_read == read_before:
            log_empty_file(name)

    def _note_fields(self, names) -> None:
        for name in names:
            if name not in _ALPACA_FIELDS:
                self.unused_fields[name] += 1

    def _bad(self, error: BadRecordError) -> None:
        self.bad_records += 1
        self.handler(error)

    def _from_array(self, path: Path, name: str) -> Iterator[LocatedAlpaca]:
        elements = iter_json_array(path, name)
        element = 0
        while True:
            try:
                line, raw, value = next(elements)
            except StopIteration:
                return
            except BadRecordError as error:
                # A syntax error, or text after the closing ']': the rest cannot be located as
                # records, so in skip mode it counts as one bad record (the quarantine holds the
                # rest, up to a bound) and reading stops. Parsing on after ']' (a second array,
                # JSON Lines) would guess at a format the file does not declare.
                self.records_read += 1
                self._bad(error)
                log.warning(
                    "%s:%d: reading stopped after %d record(s): %s; the quarantine holds the text from there: "
                    "fix it and read the file again (JSON Lines would lose only the bad line)",
                    error.source, error.line, element, error.reason,
                )
                return
            self.records_read += 1
            element += 1
            # One-line arrays (json.dump's default) put every record on line 1: name the element too.
            where = f" (array element {element})"
            if isinstance(value, NonStandardElement):  # refused as the JSON Lines reader refuses it
                self._bad(BadRecordError(name, line, value.reason + where, raw))
                continue
            if isinstance(value, dict):
                self._note_fields(value)
            try:
                record = msgspec.convert(value, AlpacaRecord)
            except msgspec.ValidationError as error:
                hint = OASST_ARRAY_AS_ALPACA_HINT if isinstance(value, dict) and looks_like_oasst(value) else ""
                self._bad(BadRecordError(name, line, f"invalid record: {error}{where}{hint}", raw))
                continue
            except UnicodeEncodeError:  # a lone surrogate in a key (msgspec encodes keys to match fields)
                reason = _lone_surrogate_escape(raw, "record") or "lone surrogate in a key (not valid Unicode text)"
                self._bad(BadRecordError(name, line, f"invalid record: {reason}{where}", raw))
                continue
            surrogate = _lone_surrogate(record)
            if surrogate is not None:
                self._bad(BadRecordError(name, line, f"invalid record: {surrogate}{where}", raw))
                continue
            yield LocatedAlpaca(record, name, line, raw)

    def _from_lines(self, path: Path, name: str) -> Iterator[LocatedAlpaca]:
        lines = iter_lines(path, name)
        blank = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                log_blank_lines(name, blank)
                return
            except BadRecordError as error:
                self.records_read += 1
                self._bad(error)
                return
            if not line.data.strip():  # no record: skipped, as datasets' JSON Lines reader skips it
                blank += 1
                continue
            self.records_read += 1
            try:
                record = _record_decoder.decode(line.data)
                self._note_fields(_keys_decoder.decode(line.data))
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as error:
                self._bad(BadRecordError(name, line.number, _line_reason(error, line.data, name, line.number), line.data))
                continue
            try:
                check_utf8(line.data, name, line.number)
            except BadRecordError as error:
                self._bad(error)
                continue
            yield LocatedAlpaca(record, name, line.number, line.data)

    def _from_dataset(self) -> Iterator[LocatedAlpaca]:
        import datasets

        folder = Path(self.source)
        json_files = self._json_data_files(folder) if folder.is_dir() and not _saved_to_disk(folder) else None
        if json_files is not None:
            # Read with the file readers: constant memory, errors by file and line, skip per
            # record; `datasets` would first prepare the whole folder in memory and name rows.
            for file in json_files:
                yield from self._from_file(file, str(file))
            return
        if folder.is_dir() and _saved_to_disk(folder):
            dataset = self._load_saved(datasets, folder)
        else:
            try:
                split = self._choose_split(datasets.get_dataset_split_names(self.source))
                dataset = datasets.load_dataset(self.source, split=split)
            except OasstDataError:
                raise
            except Exception as error:  # datasets raises many types (hub offline, missing, bad files)
                if folder.is_dir():  # a local folder: being offline is not the problem
                    raise OasstDataError(
                        f"{self.source}: is a directory but not a dataset: {_first_line(error)}"
                        " -- pass a JSON or JSON Lines file, or a folder of data files or written by save_to_disk"
                    ) from None
                raise OasstDataError(
                    f"cannot load Alpaca dataset {self.source!r}: {_first_line(error)}"
                    " -- offline? pass a local file or dataset folder to --alpaca"
                ) from None
        unused = [name for name in dataset.column_names if name not in _ALPACA_FIELDS]
        for row_number, row in enumerate(dataset, start=1):
            self.records_read += 1
            self.unused_fields.update(unused)
            try:
                record = msgspec.convert(row, AlpacaRecord)
            except msgspec.ValidationError as error:
                hint = _OASST_ROW_HINT if looks_like_oasst(row) else ""
                self._bad(BadRecordError(self.source, row_number, f"invalid record: {error}{hint}", msgspec.json.encode(row)))
                continue
            yield LocatedAlpaca(record, self.source, row_number, None)

    def _load_saved(self, datasets, folder: Path):
        """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (load_dataset refuses the former).

        A DatasetDict gives the requested split, or its only split when it has just one (the
        extractor assigns its own train/val split, so the name of a lone split does not matter).
        """
        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as error:  # datasets raises many types (missing arrow files, bad json)
            raise OasstDataError(f"cannot load Alpaca dataset folder {self.source!r} (written by save_to_disk): {_first_line(error)}") from None
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded
        return loaded[self._choose_split(list(loaded))]

    def _json_data_files(self, folder: Path) -> list[Path] | None:
        """The files of the split to read when they are all JSON or JSON Lines, else None. Which
        file belongs to which split is decided by `datasets` itself (its data-file patterns)."""
        from datasets.data_files import DataFilesDict, get_data_patterns

        try:
            by_split = DataFilesDict.from_patterns(get_data_patterns(str(folder)), base_path=str(folder))
        except Exception:  # no data files, or a layout only load_dataset understands: it says why
            return None
        if not by_split:
            return None
        names = {str(split): split for split in by_split}
        files = sorted(Path(f) for f in by_split[names[self._choose_split(list(names))]])
        formats = sorted({_data_format(f) for f in files} & _RECORD_FORMATS)  # a LICENSE.txt is no data
        if len(formats) > 1:
            # load_dataset would read the files of one format (the most common) and drop the rest.
            raise OasstDataError(
                f"{self.source}: its files are of several formats ({', '.join(formats)}), and a folder is read as one "
                "format only: give the files to --alpaca one by one, or keep one format per folder"
            )
        if not files or not all(_is_json_file(f) for f in files):
            return None
        return files

    def _choose_split(self, names: list[str]) -> str:
        """The split to read: the requested one, or the only one there is. The others are named
        in a warning: their records are not read (the extractor makes its own validation split)."""
        if self.split in names:
            chosen = self.split
        elif len(names) == 1:
            (chosen,) = names
            log.warning("%s: no %r split, reading its only split %r", self.source, self.split, chosen)
        else:
            raise OasstDataError(f"{self.source}: no {self.split!r} split in this dataset (it has {', '.join(sorted(names))})")
        ignored = sorted(name for name in names if name != chosen)
        if ignored:
            log.warning("%s: reading split %r only; not read: %s", self.source, chosen, ", ".join(ignored))
        return chosen


def _line_reason(error: Exception, data: bytes, source: str, line: int) -> str:
    """Why a JSON Lines line is no Alpaca record, with what it looks like when that is telling:
    compressed bytes, an array, an Open-Assistant record, or a pretty-printed object's first line."""
    compressed = compressed_reason(data, source, line)
    if compressed is not None:
        return compressed
    reason = _describe_decode_error(error, data)
    if not isinstance(error, msgspec.ValidationError):
        return reason + pretty_printed_hint(error, data, line)
    if str(error) == "Expected `object`, got `array`":
        return reason + _ARRAY_LINE_HINT
    try:
        keys = _keys_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return reason  # not an object: no keys to tell its kind by
    return reason + (OASST_AS_ALPACA_HINT if looks_like_oasst(keys) else "")


def check_distinct_sources(oasst_paths: Sequence[Path], alpaca: Sequence[str]) -> None:
    """Refuse an Alpaca source given twice (or also as an export): its records would be read,
    counted and trained on twice, each copy with an id of its own. Local files and folders are
    compared after resolving links; hub names by name ('alpaca' and 'default' are one)."""
    seen: dict[object, str] = {os.path.realpath(path): str(path) for path in oasst_paths}
    local_alpaca: dict[str, str] = {}
    for source in alpaca:
        text = str(source)
        if Path(text).exists():
            key: object = os.path.realpath(text)
            for other, given in local_alpaca.items():
                # An Alpaca file and an Alpaca folder holding it: the folder's reader reads it too.
                # (An export inside an Alpaca folder is not among the files that folder reads.)
                if Path(other) in Path(key).parents or Path(key) in Path(other).parents:
                    raise OasstDataError(
                        f"{text}: given twice (also inside or around {given}); its records would be counted and trained on twice"
                    )
        else:
            key = ("hub", DEFAULT_ALPACA_DATASET if text in ("alpaca", "default") else text)
        if key in seen:
            raise OasstDataError(f"{text}: given twice (also as {seen[key]}); its records would be counted and trained on twice")
        seen[key] = text
        if isinstance(key, str):
            local_alpaca[key] = text


# Formats whose files `datasets` reads as records (a folder is read as one of them only).
_RECORD_FORMATS = frozenset({".json", ".csv", ".tsv", ".parquet", ".arrow"})


def _data_format(path: Path, compressions: tuple[str, ...] = (".gz", ".zst", ".zstd", ".bz2", ".xz")) -> str:
    """A data file's format by its suffix, compression left out (JSON and JSON Lines are one)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in compressions:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else "(no suffix)"
    return ".json" if suffix == ".jsonl" else suffix


def _is_json_file(path: Path) -> bool:
    """JSON the file readers can read: plain, or compressed as open_binary decompresses."""
    return _data_format(path, (".gz", ".zst", ".zstd")) == ".json"


def _saved_to_disk(folder: Path) -> bool:
    """True for a folder `save_to_disk` wrote (the files `datasets.load_from_disk` looks for)."""
    return ((folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()) or (folder / "dataset_dict.json").is_file()


def _first_line(error: Exception) -> str:
    text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__
