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
from .alpaca_sources import DEFAULT_ALPACA_DATASET, DataFile, DataFormat, ResolvedAlpaca, choose_split, resolve_alpaca_source
from .alpaca_sources import first_line as _first_line
from .files import JSON_WHITESPACE, iter_lines, names_json_lines
from .hints import OASST_ARRAY_AS_ALPACA_HINT, OASST_AS_ALPACA_HINT, compressed_reason, lone_surrogate_escape, looks_like_oasst, pretty_printed_hint
from .jsonarray import NonStandardElement, TooDeepElement, iter_json_array, starts_with_array
from .oasst import _describe_decode_error, check_utf8, log_blank_lines, log_empty_file
from .tables import iter_table_rows, table_columns

log = logging.getLogger(__name__)

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
        self.resolved: ResolvedAlpaca | None = None  # what the source was read from, once it is
        self._split_start = 0

    def __iter__(self) -> Iterator[LocatedAlpaca]:
        resolved = self.resolved = resolve_alpaca_source(self.source, self.split)
        read_before = self._split_start = self.records_read
        if resolved.hub_name is not None:
            yield from self._from_datasets(resolved)
        else:
            for data_file in resolved.files:
                if data_file.format is DataFormat.JSON:
                    yield from self._from_file(data_file.path, str(data_file.path))
                else:
                    yield from self._from_table(data_file, resolved)
        if self.records_read == read_before and not (resolved.is_file and resolved.files[0].format is DataFormat.JSON):
            log_empty_file(self.source)  # (a JSON file has said so itself)
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
            if isinstance(value, (NonStandardElement, TooDeepElement)):  # refused as the JSON Lines reader refuses it
                self._bad(BadRecordError(name, line, value.reason + where, raw))
                continue
            # Python's json reads an escaped half surrogate pair ("\ud800"), which is no Unicode
            # text; the JSON Lines reader refuses it anywhere in a line, so the array does too,
            # ignored fields and keys included.
            lone = lone_surrogate_escape(raw, "record") if b"\\u" in raw else None
            if lone is not None:
                self._bad(BadRecordError(name, line, f"invalid record: {lone}{where}", raw))
                continue
            try:
                record = msgspec.convert(value, AlpacaRecord)
            except msgspec.ValidationError as error:
                hint = OASST_ARRAY_AS_ALPACA_HINT if isinstance(value, dict) and looks_like_oasst(value) else ""
                self._bad(BadRecordError(name, line, f"invalid record: {error}{where}{hint}", raw))
                continue
            self._note_fields(value)  # of records read only: a bad record's fields are its quarantine entry's
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
            if not line.data.strip(JSON_WHITESPACE):  # no record: skipped, as datasets' JSON Lines reader skips it
                blank += 1
                continue
            self.records_read += 1
            try:
                record = _record_decoder.decode(line.data)
                keys = _keys_decoder.decode(line.data)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as error:
                self._bad(BadRecordError(name, line.number, _line_reason(error, line.data, name, line.number), line.data))
                continue
            try:
                check_utf8(line.data, name, line.number)
            except BadRecordError as error:
                self._bad(error)
                continue
            self._note_fields(keys)
            yield LocatedAlpaca(record, name, line.number, line.data)

    def _from_table(self, data_file: DataFile, resolved: ResolvedAlpaca) -> Iterator[LocatedAlpaca]:
        """A Parquet or Arrow file's rows; a bad row is named by its file and row index (from 0,
        as pyarrow and `datasets` index rows) and, in a dataset, by its index in the split."""
        path, name = data_file.path, str(data_file.path)
        columns = table_columns(path, data_file.format)
        self._check_columns(name, columns)
        unused = [column for column in columns if column not in _ALPACA_FIELDS]
        split_offset = self.records_read - self._split_start
        for index, row in enumerate(iter_table_rows(path, data_file.format, sorted(_ALPACA_FIELDS))):
            self.records_read += 1
            self.unused_fields.update(unused)
            try:
                record = msgspec.convert(row, AlpacaRecord)
            except msgspec.ValidationError as error:
                where = f"row {index}"
                if len(resolved.files) > 1:
                    where += f" (row {split_offset + index} of split {resolved.split!r})"
                self._bad(BadRecordError(name, None, f"{where}: invalid record: {error}", msgspec.json.encode(row)))
                continue
            yield LocatedAlpaca(record, name, index + 1, None)

    def _check_columns(self, name: str, columns: list[str]) -> None:
        """A table without the Alpaca columns is refused whole, before any row: under skip, every
        row would otherwise go to the quarantine and the run would succeed without them."""
        missing = [column for column in ("instruction", "output") if column not in columns]
        if missing:
            hint = _OASST_ROW_HINT if looks_like_oasst(dict.fromkeys(columns)) else ""
            raise OasstDataError(
                f"{name}: no column {' or '.join(f'`{m}`' for m in missing)}; its columns are "
                f"{', '.join(columns) or '(none)'}, and Alpaca data needs `instruction` and `output` (`input` optional){hint}"
            )

    def _from_datasets(self, resolved: ResolvedAlpaca) -> Iterator[LocatedAlpaca]:
        """What only `datasets.load_dataset` reads: a Hub dataset not in the local Hub cache (it
        downloads and prepares it in its cache), or a folder of CSV files."""
        import datasets

        source = resolved.hub_name
        quiet = not datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # the package reports progress itself
        try:
            split = choose_split(self.source, list(datasets.get_dataset_split_names(source)), self.split)
            dataset = datasets.load_dataset(source, split=split)
        except OasstDataError:
            raise
        except Exception as error:  # datasets raises many types (hub offline, missing, bad files)
            if resolved.root is not None:  # a local folder: being offline is not the problem
                raise OasstDataError(f"{self.source}: is a directory but not a dataset: {_first_line(error)}") from None
            raise OasstDataError(_hub_error(self.source, error)) from None
        finally:
            if not quiet:
                datasets.enable_progress_bars()
        resolved.split = split
        resolved.files = [DataFile(Path(entry["filename"]), DataFormat.ARROW) for entry in dataset.cache_files]
        self._check_columns(self.source, list(dataset.column_names))
        unused = [name for name in dataset.column_names if name not in _ALPACA_FIELDS]
        for index, row in enumerate(dataset.select_columns([c for c in dataset.column_names if c in _ALPACA_FIELDS])):
            self.records_read += 1
            self.unused_fields.update(unused)
            try:
                record = msgspec.convert(row, AlpacaRecord)
            except msgspec.ValidationError as error:
                self._bad(BadRecordError(self.source, None, f"row {index} of split {split!r}: invalid record: {error}", msgspec.json.encode(row)))
                continue
            yield LocatedAlpaca(record, self.source, index + 1, None)


def _hub_error(source: str, error: Exception) -> str:
    from huggingface_hub import constants

    reason = f"cannot load Alpaca dataset {source!r}: {_first_line(error)}"
    if constants.HF_HUB_OFFLINE:
        return (
            f"{reason} -- offline, and it is neither a local file or folder nor in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}): download it where there is network (`hf download {source} --repo-type dataset`) "
            "or pass a local file or dataset folder to --alpaca"
        )
    return f"{reason} -- offline? pass a local file or dataset folder to --alpaca"


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
