"""Markdown-aware chunking, independent of the component bindings.

A document is cut into *sections* at its headings (ATX `# Title` and setext
`Title` / `=====`), then each section into chunks of at most `max_chars`
characters that end at block boundaries (paragraphs, lists, fenced code
blocks); a block too large for one chunk is cut at line ends, then sentence
ends, then between words, and inside a word only as a last resort.

Every chunk is an exact slice of the source text (stripped of surrounding
whitespace), never spans two sections, and carries the section's heading
path, e.g. ``"Baggage > Checked bags"``. The first chunk of a section starts
with the section's heading line, so its text says what it is about.

This module is plain Python so it can be unit-tested outside Wasm
(``python3 -m unittest`` in this directory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

DEFAULT_MAX_CHARS = 800
SECTION_SEPARATOR = " > "

Span = Tuple[int, int]

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_OR_QUOTE = re.compile(r"^ {0,3}(?:[-*+>]|\d{1,9}[.)])(?:[ \t]|$)")

# Cut points inside an oversized block, coarsest first. Each pattern matches
# the separator *between* two pieces.
_CUT_LEVELS = (
    re.compile(r"[ \t]*\n\s*"),  # line ends
    re.compile(r"(?<=[.!?…:;])\s+"),  # sentence (or clause) ends
    re.compile(r"\s+"),  # between words
)


@dataclass
class Section:
    """A heading and the text under it, up to the next heading."""

    path: List[str]  # heading titles from the top level down; [] before the first heading
    blocks: List[Span] = field(default_factory=list)  # heading line (if any) first
    has_body: bool = False  # whether anything but the heading is in it


@dataclass
class TextChunk:
    seq: int
    text: str
    section: str
    span: Span


def _lines(text: str) -> List[Span]:
    """(start, end) of every line, without its newline."""
    spans, pos = [], 0
    for m in re.finditer(r"\n", text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return spans


def sections(text: str) -> List[Section]:
    """Splits markdown `text` into sections of blocks (see the module doc)."""
    lines = _lines(text)
    out: List[Section] = [Section(path=[])]
    stack: List[Tuple[int, str]] = []  # (level, title) of the open headings
    block_start: Optional[int] = None  # start of the paragraph being read
    block_end = 0
    fence: Optional[str] = None  # the opening fence while inside a code block

    def close_block() -> None:
        nonlocal block_start
        if block_start is not None:
            out[-1].blocks.append((block_start, block_end))
            out[-1].has_body = True
            block_start = None

    def open_section(level: int, title: str, span: Span) -> None:
        close_block()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title.strip() or "(untitled)"))
        out.append(Section(path=[t for _, t in stack], blocks=[span]))

    i = 0
    while i < len(lines):
        start, end = lines[i]
        line = text[start:end].rstrip("\r")
        if fence is not None:
            # Inside a fenced code block: only its closing fence ends it.
            block_end = end
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and stripped.strip(fence[0]) == "":
                fence = None
                close_block()
            i += 1
            continue
        m = _FENCE.match(line)
        if m:
            close_block()
            fence = m.group(1)
            block_start, block_end = start, end
            i += 1
            continue
        m = _ATX.match(line)
        if m:
            open_section(len(m.group(1)), m.group(2) or "", (start, end))
            i += 1
            continue
        if not line.strip():
            close_block()
            i += 1
            continue
        # A setext heading: one line of text (a paragraph of its own so far)
        # underlined with === (level 1) or --- (level 2).
        if (
            block_start is None
            and i + 1 < len(lines)
            and not _LIST_OR_QUOTE.match(line)
        ):
            nstart, nend = lines[i + 1]
            um = _SETEXT.match(text[nstart:nend].rstrip("\r"))
            if um:
                level = 1 if um.group(1)[0] == "=" else 2
                open_section(level, line, (start, nend))
                i += 2
                continue
        if block_start is None:
            block_start = start
        block_end = end
        i += 1
    close_block()  # also closes a code block left open at the end
    return [s for s in out if s.has_body]


def _trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pack(pieces: Sequence[Span], max_chars: int) -> List[Span]:
    """Greedily joins consecutive pieces (each at most `max_chars` long) into
    spans of at most `max_chars`. A span runs from its first piece's start to
    its last piece's end, so it includes the original separators and is
    measured as it will be cut."""
    out: List[Span] = []
    cur: Optional[Span] = None
    for s, e in pieces:
        if cur is None:
            cur = (s, e)
        elif e - cur[0] <= max_chars:
            cur = (cur[0], e)
        else:
            out.append(cur)
            cur = (s, e)
    if cur:
        out.append(cur)
    return out


def _atoms(text: str, span: Span, max_chars: int, level: int = 0) -> List[Span]:
    """Cuts a span into pieces of at most `max_chars` characters, each at the
    coarsest kind of boundary that makes it fit. The pieces are packed into
    chunks afterwards, together with their neighbours, so a heading line
    shares a chunk with the start of a long paragraph under it."""
    start, end = _trim(text, *span)
    if end <= start:
        return []
    if end - start <= max_chars:
        return [(start, end)]
    if level >= len(_CUT_LEVELS):
        # One word longer than a chunk: cut it every `max_chars` characters.
        cuts = (_trim(text, i, min(i + max_chars, end)) for i in range(start, end, max_chars))
        return [c for c in cuts if c[1] > c[0]]
    out: List[Span] = []
    pos = start
    for m in _CUT_LEVELS[level].finditer(text, start, end):
        if m.start() > pos:
            out.extend(_atoms(text, (pos, m.start()), max_chars, level + 1))
        pos = max(pos, m.end())
    if pos < end:
        out.extend(_atoms(text, (pos, end), max_chars, level + 1))
    return out


def chunk_markdown(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> List[TextChunk]:
    """Splits markdown `text` into chunks of at most `max_chars` characters."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    chunks: List[TextChunk] = []
    for sec in sections(text):
        atoms = [a for b in sec.blocks for a in _atoms(text, b, max_chars)]
        spans = _pack(atoms, max_chars)
        label = SECTION_SEPARATOR.join(sec.path)
        for s, e in spans:
            chunks.append(TextChunk(seq=len(chunks), text=text[s:e], section=label, span=(s, e)))
    return chunks


def parse_max_chars(value: Optional[str]) -> int:
    """The `max_chars` config value (JSON text of a number, or a string of
    digits), or the default when unset."""
    if value is None:
        return DEFAULT_MAX_CHARS
    v = value.strip().strip('"')
    if not (v.isascii() and v.isdigit()) or int(v) < 1:
        raise ValueError(f"config `max_chars` must be a positive integer, not {value!r}")
    return int(v)


def check_doc_id(doc_id: str) -> None:
    """Chunk ids are `<doc id>#<n>`, so a doc id must be non-empty and `#`-free."""
    if not doc_id:
        raise ValueError("document id is empty")
    if "#" in doc_id:
        raise ValueError(
            f"document id {doc_id!r} contains '#', which separates the document id "
            "from the chunk number in chunk ids"
        )
