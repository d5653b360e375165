"""What an ingest reports while it runs, for a front end's progress display.

``Progress`` is the protocol ``Ingestor.ingest`` calls, from its first second to its end:
``stage`` says what the run is doing (scanning a folder, comparing files with the index,
parsing and embedding); ``start`` once per root with the bytes to index; ``files`` the files
to parse, how many were parsed and the bytes read so far; ``embedded`` the running total of
chunks embedded and stored, after every embedding batch (the one chunk count a display shows:
it is also what the summary's ``chunks_written`` ends at); ``advance`` by bytes indexed;
``working_on`` the file being chunked; ``chunks`` once per committed batch (the same total);
``notice`` one-off lines (big files named up front with an estimate). ``NoProgress`` ignores
them all; ``filled(progress)`` lets a sink implement only some of them (one written before
``stage``, ``files`` and ``embedded`` existed keeps working). Knows nothing of bars,
terminals or pages.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def stage(self, text: str) -> None: ...
    def start(self, total: int, label: str) -> None: ...
    def files(self, parsed: int, total: int, bytes_read: int) -> None: ...
    def embedded(self, chunks: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def working_on(self, path: str) -> None: ...
    def chunks(self, written: int) -> None: ...
    def notice(self, message: str) -> None: ...


class NoProgress:
    """A ``Progress`` that shows nothing."""

    def stage(self, text: str) -> None:
        pass

    def start(self, total: int, label: str) -> None:
        pass

    def files(self, parsed: int, total: int, bytes_read: int) -> None:
        pass

    def embedded(self, chunks: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def working_on(self, path: str) -> None:
        pass

    def chunks(self, written: int) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


class _Filled:
    """A sink with the calls it lacks answered by ``NoProgress``."""

    def __init__(self, given: object) -> None:
        self._given = given

    def __getattr__(self, name: str):
        return getattr(self._given, name, None) or getattr(_NOTHING, name)


_NOTHING = NoProgress()


def filled(progress: object | None) -> Progress:
    """``progress`` with every call of the protocol (a missing one does nothing); None shows nothing."""
    return _NOTHING if progress is None else _Filled(progress)  # type: ignore[return-value]
