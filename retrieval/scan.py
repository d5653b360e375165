"""Walk an ingest root and stat every entry, deciding from names and stats alone.

Each file becomes a ``ScannedFile`` keyed by its path relative to the root ('/'
separators; bytes that are not UTF-8 shown as ``\\xNN``). Symlinks whose target leaves
the root, broken links, symlinked directories, special files, unsupported types and
files over the size limit get a skip reason here and are never opened. Well-known tool
folders (.git, .venv, node_modules, __pycache__ …) are not walked. A walked entry costs
one lstat (``scandir``'s, reused) and string slicing for its key, so re-syncing a large
unchanged folder stays cheap.

This module reads no file contents and knows nothing of the manifest or parsing.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from dataclasses import dataclass

from feldspar.retrieval.loaders import file_kind, unsupported_reason

IGNORED_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox",
                ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@dataclass
class ScannedFile:
    key: str
    path: str  # what to open: the entry itself, or the resolved target of an in-root symlink
    size: int
    mtime_ns: int
    skip_reason: str | None = None
    sha256: str | None = None  # filled in once the file has been hashed

    @property
    def ext(self) -> str:
        return os.path.splitext(self.key)[1].lower().lstrip(".")


def display_key(relative: str) -> str:
    return os.fsencode(relative).decode("utf-8", "backslashreplace").replace(os.sep, "/")


def inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def scan_root(root: str, max_bytes: int) -> list[ScannedFile]:
    """Every file under the real directory ``root``, sorted by key."""
    found: list[ScannedFile] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            found.append(_skipped(root, directory + os.sep, None, f"cannot list directory: {exc.strerror}"))
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.is_symlink():
                if entry.name not in IGNORED_DIRS:
                    stack.append(entry.path)
                continue
            found.append(_scan_dir_entry(root, entry, max_bytes))
    return sorted(found, key=lambda f: f.key)


def _scan_dir_entry(root: str, entry: os.DirEntry, max_bytes: int) -> ScannedFile:
    """Like ``scan_entry``, reusing the type and stat ``scandir`` already has (one lstat)."""
    try:
        link_stat = entry.stat(follow_symlinks=False)
    except OSError as exc:
        return _skipped(root, entry.path, None, f"cannot stat: {exc.strerror}")
    return _scan_stat(root, entry.path, link_stat, max_bytes)


def scan_entry(root: str, path: str, max_bytes: int) -> ScannedFile:
    """One file (or symlink) under ``root``."""
    try:
        link_stat = os.lstat(path)
    except OSError as exc:
        return _skipped(root, path, None, f"cannot stat: {exc.strerror}")
    return _scan_stat(root, path, link_stat, max_bytes)


def _scan_stat(root: str, path: str, link_stat: os.stat_result, max_bytes: int) -> ScannedFile:
    if stat_module.S_ISLNK(link_stat.st_mode):
        return _scan_symlink(root, path, link_stat, max_bytes)
    if not _is_regular(link_stat):
        return _skipped(root, path, link_stat, "not a regular file")
    return _classify(root, path, path, link_stat, max_bytes)


def relative_key(root: str, path: str) -> str:
    """The key of ``path`` under ``root``: plain slicing for paths built from ``root``."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    simple = path.startswith(prefix) and not path.endswith(os.sep) and len(path) > len(prefix)
    return display_key(path[len(prefix):] if simple else os.path.relpath(path, root))


def _scan_symlink(root: str, path: str, link_stat: os.stat_result, max_bytes: int) -> ScannedFile:
    target = os.path.realpath(path)
    if not inside(target, root):
        return _skipped(root, path, link_stat, "symlink leads outside the ingested root")
    try:
        target_stat = os.stat(target)
    except OSError:
        return _skipped(root, path, link_stat, "broken symlink")
    if os.path.isdir(target):
        return _skipped(root, path, link_stat, "symlinked directory not followed")
    if not _is_regular(target_stat):
        return _skipped(root, path, link_stat, "not a regular file")
    return _classify(root, path, target, target_stat, max_bytes)


def _is_regular(stat: os.stat_result) -> bool:
    return stat_module.S_ISREG(stat.st_mode)


def _classify(root: str, path: str, target: str, stat: os.stat_result, max_bytes: int) -> ScannedFile:
    name = os.path.basename(path)
    scanned = ScannedFile(relative_key(root, path), target, stat.st_size, stat.st_mtime_ns)
    if file_kind(name) is None:
        scanned.skip_reason = unsupported_reason(name)
    elif stat.st_size > max_bytes:
        scanned.skip_reason = f"larger than the size limit of {max_bytes} bytes"
    elif stat.st_size == 0:
        scanned.skip_reason = "empty file"
    return scanned


def _skipped(root: str, path: str, stat: os.stat_result | None, reason: str) -> ScannedFile:
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
    return ScannedFile(relative_key(root, path), path, size, mtime, reason)


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
