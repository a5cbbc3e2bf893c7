"""Generated blocks in markdown files: the lab's tools rewrite the part of a doc between two marker lines and keep
the rest as written."""
from __future__ import annotations

from pathlib import Path

from pyfusion.io import write_atomic

__all__ = ["block_markers", "has_block", "replace_block"]


def block_markers(name: str) -> tuple[str, str]:
    """The marker lines ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` of a generated block in a markdown file."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def has_block(text: str, name: str) -> bool:
    """Whether ``text`` has one start and one later end marker line of block ``name`` (:func:`block_markers`)."""
    start, end = block_markers(name)
    lines = [line.strip() for line in text.splitlines()]
    return lines.count(start) == 1 and lines.count(end) == 1 and lines.index(start) < lines.index(end)


def replace_block(path, name: str, block: str, *, append: bool = True) -> str:
    """Put ``block`` (a blank line either side) between the marker lines of block ``name`` in the markdown file
    ``path`` (:func:`block_markers`) and write it atomically (:func:`write_atomic`); the rest of the file is kept.
    A missing file is created holding just the markers and the block. Returns the new text.

    A file without the markers gets them appended at its end, or, with ``append=False``, a ValueError: a
    hand-written file, or a generated one whose markers were lost, is then never silently extended.
    """
    start, end = block_markers(name)
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.exists() else ""
    new = f"{start}\n\n{block.strip()}\n\n{end}"
    if has_block(text, name):
        lines = text.splitlines(keepends=True)
        stripped = [line.strip() for line in lines]
        i, j = stripped.index(start), stripped.index(end)
        tail = lines[j][len(lines[j].rstrip("\r\n")):]
        text = "".join(lines[:i]) + new + (tail or "") + "".join(lines[j + 1:])
    elif not text.strip() or (append and start not in text and end not in text):
        text = (text.rstrip() + "\n\n" if text.strip() else "") + new + "\n"
    else:
        raise ValueError(f"{p}: exists without one '{start}' line and one later '{end}' line; refusing to "
                         "overwrite it (add the markers around its generated part, or give a new file)")
    write_atomic(p, text)
    return text
