"""User-facing retrieval errors: each one is a single clear line for the CLI/UI.

Everything here derives from ``RetrievalError`` so the app turns it into ``error: …``
(with its remedy worded by the app) and exit code 1. Per-file problems during ingest are not errors: they become a
manifest status (skipped/failed) with a reason, and never stop a run.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every retrieval error a user can cause and fix.

    ``fix`` names a remedy that the app layer words for its users (flags, commands), filled
    in from ``details``; this layer knows no flags or commands.
    """

    def __init__(self, message: str = "", *, fix: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.fix = fix
        self.details = details


class EmbeddingModelMismatch(RetrievalError):
    """The collection was indexed with a different embedding model than configured."""

    def __init__(self, collection: str, indexed_with: str, configured: str) -> None:
        super().__init__(
            f"collection {collection!r} was indexed with embedding model {indexed_with!r} but "
            f"{configured!r} is configured", fix="embedding_mismatch", collection=collection, indexed_with=indexed_with,
        )


class EmbeddingPrecisionMismatch(RetrievalError):
    """The collection's vectors were made in another precision (fp32, fp16, int8) than configured."""

    def __init__(self, collection: str, indexed_with: str, configured: str) -> None:
        super().__init__(
            f"collection {collection!r} was indexed with {indexed_with} embeddings but {configured} is "
            "configured; vectors made one way are not comparable with another",
            fix="embedding_precision", collection=collection, indexed_with=indexed_with,
        )


class StoreBusy(RetrievalError):
    """Another ingest already holds the single-writer lock of this store."""


class UnknownCollection(RetrievalError):
    """The named collection does not exist in the store."""


class InvalidCollectionName(RetrievalError):
    """A collection name Chroma cannot accept."""


class StoreUnavailable(RetrievalError):
    """The Chroma store (local directory or server) cannot be opened or reached."""


class StoreDamaged(StoreUnavailable):
    """The local Chroma store's files are corrupt ("database disk image is malformed")."""


class EmbeddingModelUnavailable(RetrievalError):
    """The configured sentence-transformers model cannot be loaded."""


class InvalidSource(RetrievalError):
    """An ingest path that does not exist or is not a directory/file."""


class InvalidQuestions(RetrievalError):
    """An evaluation questions file that cannot be read or parsed."""
