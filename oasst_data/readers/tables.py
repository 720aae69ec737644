"""Rows of Parquet and Arrow files, batch by batch, in bounded memory.

Parquet is read one row group's batch at a time; Arrow IPC files (what `save_to_disk` writes,
stream format) are memory-mapped, so their pages are the kernel's to drop. Only the wanted
columns are read. A file that is no readable table is an error naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import OasstDataError
from .alpaca_sources import DataFormat

_BATCH_ROWS = 1024


def table_columns(path: Path, data_format: DataFormat) -> list[str]:
    """The file's column names, from its schema (no rows are read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if data_format is DataFormat.PARQUET:
            return list(pq.read_schema(path).names)
        with pa.memory_map(str(path)) as source:
            return list(_open_arrow(source).schema.names)
    except (OSError, pa.ArrowException) as error:
        raise _unreadable(path, data_format, error) from None


def iter_table_rows(path: Path, data_format: DataFormat, columns: Sequence[str]) -> Iterator[dict]:
    """Each row of the file as a dict of the given columns (those the file has), in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if data_format is DataFormat.PARQUET:
            parquet = pq.ParquetFile(path)
            present = [name for name in parquet.schema_arrow.names if name in columns]  # in file order
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=present):
                yield from batch.to_pylist()
            return
        with pa.memory_map(str(path)) as source:
            reader = _open_arrow(source)
            present = [name for name in reader.schema.names if name in columns]
            for batch in _arrow_batches(reader):
                # An Arrow batch may hold a whole file's rows: convert a slice at a time.
                batch = batch.select(present)
                for start in range(0, batch.num_rows, _BATCH_ROWS):
                    yield from batch.slice(start, _BATCH_ROWS).to_pylist()
    except (OSError, pa.ArrowException) as error:
        raise _unreadable(path, data_format, error) from None


def _open_arrow(source):
    """An Arrow IPC reader for the stream format (save_to_disk's) or the file format."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source)


def _arrow_batches(reader) -> Iterator:
    import pyarrow as pa

    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
    else:
        yield from reader


def _unreadable(path: Path, data_format: DataFormat, error: Exception) -> OasstDataError:
    first = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    return OasstDataError(f"{path}: cannot read it as {data_format.value.capitalize()}: {first}")
