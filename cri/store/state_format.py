"""The format of pycri's durable state, in ``<root>/format``: a number, raised by any change an
older pycri would misread.

Every program that writes ``root`` (the daemon, ``pycri image import``) claims it first. State
of a newer format is refused with a clear message and left untouched: an older pycri after a
rollback would otherwise take a record it cannot parse for a broken one and drop it, and then
collect the layers and state dirs nobody seems to use. A root without the file is the format
this version writes (pycri wrote no file before it had one), and gets the file.
"""

from __future__ import annotations

from pathlib import Path

from cri.store.durable import write_atomic

FORMAT = 1
FILE = "format"


class NewerState(Exception):
    """The state was written in a format this pycri does not know."""


def check(root: Path) -> int | None:
    """The format of the state in ``root`` (None: no file yet); NewerState if this pycri does
    not know it. Reads only."""
    path = root / FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise NewerState(f"{path} holds {text[:40]!r}, not a state format this pycri knows; "
                         "it is left as it is")
    found = int(text)
    if found > FORMAT:
        raise NewerState(
            f"the state in {root} is format {found}, written by a newer pycri; this one knows "
            f"format {FORMAT} at most. Run the newer pycri, or move {root} away to start empty")
    return found


def claim(root: Path) -> None:
    """Refuse (NewerState) a state this version does not know; mark one it does as its own."""
    if check(root) == FORMAT:
        return
    # No file yet, or an older format (a migration would go here; none is needed yet).
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(root / FILE, f"{FORMAT}\n".encode(), 0o644)
