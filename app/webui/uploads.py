"""What the web UI lets in: folders under the allowed roots, and uploads it can store safely.

``allowed_folder`` resolves a path given in the page (symlinks followed) and accepts it only
inside one of ``ui_allowed_roots`` and not below a hidden folder there; it says nothing about
paths outside (not even whether they exist). ``safe_upload_name`` accepts only plain file
names (no path parts, control or format characters, dotfiles or ``..``), ``check_upload``
adds the type (what retrieval's loaders read) and size, and ``store_uploads`` writes the
accepted files under ``<home>/uploads/<collection>/`` through a temporary name, so a file
is complete or absent. Every refusal is a ``Refused`` with one clear line, raised before
anything is written. Knows paths and retrieval's file types; nothing of Streamlit.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from feldspar.retrieval.loaders import file_kind
from feldspar.webui.jobs import Refused

MAX_NAME_BYTES = 200
BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # control, format (bidi tricks), odd code points
ROOTS_REMEDY = "add a folder above it to ui_allowed_roots (FELDSPAR_UI_ALLOWED_ROOTS or config.toml)"


class UploadedFile(Protocol):
    """What the page hands over: Streamlit's UploadedFile has these."""

    name: str
    size: int

    def getvalue(self) -> bytes: ...


@dataclass
class CheckedUpload:
    name: str
    data: bytes


# ---- folders -------------------------------------------------------------------------------
def allowed_folder(raw: str, roots: Sequence[Path]) -> Path:
    """The real path of ``raw`` when it lies inside an allowed root (not under a hidden folder)."""
    text = (raw or "").strip()
    if not text:
        raise Refused("give the path of a folder on the server")
    if "\x00" in text:
        raise Refused("the folder path contains a NUL character")
    given = Path(text).expanduser()
    if not given.is_absolute():
        raise Refused(f"give an absolute folder path (got {text!r})")
    real = Path(os.path.realpath(given))
    shown = ", ".join(str(r) for r in roots) or "none"
    inside = False
    for root in roots:
        real_root = Path(os.path.realpath(Path(root).expanduser()))
        if real == real_root or real.is_relative_to(real_root):
            inside = True
            if not any(part.startswith(".") for part in real.relative_to(real_root).parts):
                break
    else:
        if inside:
            raise Refused(f"{given} is inside a hidden folder; the UI does not read hidden folders")
        raise Refused(f"{given} is outside the folders the UI may read ({shown}); {ROOTS_REMEDY}")
    if not real.exists():
        raise Refused(f"no such file or folder: {given}")
    return real


# ---- uploads -------------------------------------------------------------------------------
def safe_upload_name(name: str) -> str:
    """``name`` as a plain, safe file name, or ``Refused`` saying why not."""
    cleaned = unicodedata.normalize("NFC", name or "").strip()
    if "/" in cleaned or "\\" in cleaned or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise Refused(f"upload {name!r} has a path in its name; only plain file names are accepted")
    if any(unicodedata.category(ch) in BAD_CATEGORIES for ch in cleaned):
        raise Refused(f"upload {name!r} has control or invisible characters in its name")
    if not cleaned or cleaned.startswith("."):
        raise Refused(f"upload {name!r}: hidden files, '.' and '..' are not accepted")
    if len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        raise Refused(f"upload name {name[:40]!r}… is longer than {MAX_NAME_BYTES} bytes")
    return cleaned


def check_upload(upload: UploadedFile, max_bytes: int) -> CheckedUpload:
    """Name, type and size of one upload, checked before anything is written."""
    name = safe_upload_name(upload.name)
    if file_kind(name) is None:
        ext = os.path.splitext(name)[1] or "(none)"
        raise Refused(f"upload {name!r} is of an unknown type {ext}; Feldspar reads text, Markdown, HTML, PDF, "
                      "DOCX, code and data files")
    if upload.size > max_bytes:
        raise Refused(f"upload {name!r} is {upload.size:,} bytes, over the {max_bytes:,}-byte limit "
                      "(ui_max_upload_bytes)")
    data = upload.getvalue()
    if len(data) > max_bytes:  # the size a client claims is not trusted
        raise Refused(f"upload {name!r} is over the {max_bytes:,}-byte limit (ui_max_upload_bytes)")
    return CheckedUpload(name, data)


def store_uploads(folder: Path, uploads: Iterable[CheckedUpload]) -> list[Path]:
    """Write checked uploads into ``folder``, each through a hidden temporary file and a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for upload in uploads:
        target = folder / upload.name
        if target.parent != folder:  # safe_upload_name makes this impossible; never write elsewhere
            raise Refused(f"upload {upload.name!r} would leave the uploads folder")
        handle, temp = tempfile.mkstemp(prefix=".upload-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(upload.data)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
