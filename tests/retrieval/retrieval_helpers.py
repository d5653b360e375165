"""Helpers for retrieval tests: CLI subprocesses, manifest/store inspection, PDF/DOCX makers.

Imported as ``from tests.retrieval.retrieval_helpers import …``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FELDSPAR = [sys.executable, "-m", "feldspar"]


def run_cli(*args: str, home: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([*FELDSPAR, *args], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(*args: str, home: Path, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([*FELDSPAR, *args], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest_rows(home: Path, collection: str = "default") -> dict[str, tuple]:
    """``path -> (status, chunk ids json, pending)`` read straight from SQLite.

    Paths of the first root (sorted) are bare; other roots' paths are ``root:path``.
    """
    path = home / "manifest.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT root, path, status, chunk_ids, pending_ids FROM files WHERE collection=? ORDER BY root",
                          (collection,)).fetchall()
    roots = sorted({row[0] for row in rows}) or [""]
    return {p if r == roots[0] else f"{r}:{p}": (s, ids, pending) for r, p, s, ids, pending in rows}


def store_ids(service, collection: str = "default") -> set[str]:
    chunks = service.store.open(collection, service.embedder.name, create=True)
    return {i for ids, _, _ in chunks.iterate() for i in ids}


def assert_consistent(service, collection: str = "default") -> None:
    """Store holds exactly the manifest's chunk ids; no file is left half-written."""
    import json

    rows = manifest_rows(service.config.home, collection)
    expected = set()
    for status, ids, pending in rows.values():
        assert pending is None and status in ("indexed", "skipped", "failed")
        expected |= set(json.loads(ids))
    assert store_ids(service, collection) == expected


# ---- generated documents -----------------------------------------------------------------
def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None,
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        content = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
                       f"/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted_pdf_bytes(pages: list[str], password: str = "secret") -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx_file(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly Report", level=1)
    document.add_paragraph("Revenue grew in the northern region.")
    document.add_heading("Risks", level=2)
    document.add_paragraph("Supply of feldspar minerals is uncertain.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "region", "sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "north", "42"
    document.save(str(path))
    return path
