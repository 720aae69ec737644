"""`verify`: recompute the sha256 of every shard and tokenizer file and compare with the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .hashing import sha256_file
from .load import load_manifest


@dataclass
class VerifyReport:
    checked: int = 0  # files whose sha256 was compared: shards and saved tokenizer files
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # shards under data/ the manifest does not list
    # Files in the saved tokenizer's folder the manifest does not list: one (special_tokens_map.json)
    # changes what AutoTokenizer loads (another EOS or pad) while every listed file still matches.
    unlisted_tokenizer_files: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why): permissions, I/O errors

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unlisted or self.unlisted_tokenizer_files or self.unreadable)

    def damage(self, limit: int = 3) -> str | None:
        """What stops the build from being read as the manifest describes it (listed files missing
        or changed, a tokenizer file added), in one line; None if nothing. Unlisted extra shards
        are not read by the package, nor by datasets (the card lists the files), but a glob over
        data/ (polars, DuckDB) reads them: `verify` names them, `stats` warns."""
        problems = [f"checksum differs: {p}" for p in self.mismatched] + [f"missing: {p}" for p in self.missing]
        problems += [f"not in the manifest: {p}" for p in self.unlisted_tokenizer_files]
        problems += [f"unreadable: {p} ({why})" for p, why in self.unreadable]
        return _first(problems, limit, "; ") if problems else None

    def unlisted_shards(self, limit: int = 3) -> str:
        """The shards under data/ the manifest does not list, the first `limit` named."""
        return _first(self.unlisted, limit, ", ")


def _first(items: list[str], limit: int, separator: str) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return separator.join(items[:limit]) + more


def verify_shards(out_dir: str | Path, tokenizer_files: bool = True) -> VerifyReport:
    """Every shard's sha256 against the manifest, and the saved tokenizer's files' (unless
    `tokenizer_files` is False); shards under data/ the manifest does not list are named too."""
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    report = VerifyReport()
    listed = set()
    for shard in manifest["shards"]:
        listed.add(shard["path"])
        _check_file(out_dir, shard["path"], shard["sha256"], report)
    if tokenizer_files:
        saved = verify_saved_tokenizer(out_dir, manifest)
        report.checked += saved.checked
        report.mismatched += saved.mismatched
        report.missing += saved.missing
        report.unlisted_tokenizer_files += saved.unlisted_tokenizer_files
        report.unreadable += saved.unreadable
    data = out_dir / "data"
    try:
        found = sorted(data.rglob("*.parquet")) if data.is_dir() else []
    except OSError:  # an unreadable folder: its shards are reported unreadable above
        found = []
    for path in found:
        relative = path.relative_to(out_dir).as_posix()
        if relative not in listed:
            report.unlisted.append(relative)
    return report


def verify_saved_tokenizer(out_dir: str | Path, manifest: dict) -> VerifyReport:
    """The sha256 of the tokenizer files the build saved beside its shards (none before they
    travelled with the shards), against the manifest: checked before the tokenizer is loaded."""
    out_dir = Path(out_dir)
    report = VerifyReport()
    saved = manifest.get("tokenizer", {}).get("saved")
    if not saved:
        return report
    files = saved.get("files", {})
    for name, digest in sorted(files.items()):
        _check_file(out_dir, f"{saved['folder']}/{name}", digest, report)
    folder = out_dir / saved["folder"]
    try:
        present = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    except OSError:  # an unreadable folder: its files are reported unreadable above
        present = []
    report.unlisted_tokenizer_files += [f"{saved['folder']}/{name}" for name in present if name not in files]
    return report


def _check_file(out_dir: Path, relative: str, digest: str, report: VerifyReport) -> None:
    path = out_dir / relative
    try:
        if not path.is_file():
            report.missing.append(relative)
            return
        actual = sha256_file(path)
    except OSError as error:  # one unreadable file must not hide the state of the others
        report.unreadable.append((relative, error.strerror or str(error)))
        return
    report.checked += 1
    if actual != digest:
        report.mismatched.append(relative)
