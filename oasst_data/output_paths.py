"""Outputs never land on inputs: checked before any work starts, so a mistyped path costs an error
message, not an export. Paths are compared after resolving links (`realpath`), so `./a.jsonl`,
`a.jsonl` and a symlink to it are one file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .atomic import write_target
from .errors import OasstDataError


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _local(inputs: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """The inputs that are on this disk (an Alpaca source may be a hub name instead)."""
    return [(str(given), _real(given)) for given in inputs if Path(given).exists()]


def check_outputs(outputs: Mapping[str, str | Path | None], inputs: Iterable[str | Path] = ()) -> None:
    """Refuse an output file that is an input or lies inside an input folder (a build given to
    `stats`), or that two options name at once. `outputs`: option name -> path (None: not given)."""
    local_inputs = _local(inputs)
    named: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        _check_writable(option, Path(path))
        real = _real(path)
        for given, real_input in local_inputs:
            if real == real_input:
                raise OasstDataError(f"{path}: {option} names the input {given}; writing it would destroy the input")
            if real_input.is_dir() and real_input in real.parents:
                raise OasstDataError(f"{path}: {option} lies inside the input folder {given}; write it elsewhere")
        if write_target(path)[1]:
            continue  # a device or pipe is written in place: two outputs there overwrite nothing
        build = owning_build(real)
        if build is not None:
            raise OasstDataError(f"{path}: {option} {_AMONG_BUILD_FILES.format(build=build)}")
        if real in named:
            raise OasstDataError(f"{path}: given both as {named[real]} and as {option}; one would overwrite the other")
        named[real] = option


def is_a_build(folder: Path) -> bool:
    """A manifest.json that an oasst-data build wrote (even a damaged build counts)."""
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("package") == "oasst-data"


# What a build writes and checks: a file put there replaces one of them, or breaks `verify`
# (a Parquet file under data/ that the manifest does not list). Other files beside them are the
# user's (a card of one's own), though `build --overwrite` replaces the folder whole.
_BUILD_OWNED = frozenset(("manifest.json", "README.md", "quarantine.jsonl", "data", "tokenizer"))
_AMONG_BUILD_FILES = (
    "would be among the files of the oasst-data build {build} (its manifest, card, quarantine, data/ or tokenizer/), "
    "which its manifest describes: write it elsewhere"
)


def owning_build(path: str | Path) -> Path | None:
    """The oasst-data build among whose own files `path` is (or would be), if any."""
    real = _real(path)
    for folder in real.parents:
        if (folder / "manifest.json").is_file() and is_a_build(folder):
            return folder if real.relative_to(folder).parts[0] in _BUILD_OWNED else None
    return None


def check_not_in_a_build(folder: str | Path, option: str) -> None:
    """Refuse an output folder (a new build) among another build's own files."""
    build = owning_build(folder)
    if build is not None:
        raise OasstDataError(f"{folder}: {option} {_AMONG_BUILD_FILES.format(build=build)}")


def _check_writable(option: str, path: Path) -> None:
    """An output file must be a file name in a folder this process can write (checked now, not
    when the run writes it: a quarantine's first bad record may come hours in)."""
    if path.is_dir():
        raise OasstDataError(f"{path}: is a directory (given as {option}); give a file name")
    target, in_place = write_target(path)
    if in_place:  # a device or FIFO, written as it is: its folder does not matter
        if not os.access(target, os.W_OK):
            raise OasstDataError(f"{path}: {option} cannot be written")
        return
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # missing folders are made: the nearest existing one must be writable
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise OasstDataError(f"{path}: {option} cannot be written: {folder} is not writable")


def check_replaced_folder(folder: str | Path, inputs: Iterable[str | Path] = (), outputs: Mapping[str, str | Path | None] | None = None) -> None:
    """`folder` is about to be replaced as a whole: refuse when an input, or another output that
    must outlive the swap, lies inside it (or is it)."""
    real_folder = _real(folder)

    def inside(path: Path) -> bool:
        return path == real_folder or real_folder in path.parents

    for given, real_input in _local(inputs):
        if inside(real_input):
            raise OasstDataError(f"{folder}: holds the input {given}; the build replaces this folder, so write it elsewhere")
    for option, path in (outputs or {}).items():
        if path is not None and inside(_real(path)):
            raise OasstDataError(
                f"{path}: {option} lies inside the output folder {folder}, which the build replaces when it finishes; "
                "write it elsewhere, or leave it out to get DIR/quarantine.jsonl"
            )
