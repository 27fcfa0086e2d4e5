"""{{name}}: a weft `chunker` stage in Python, built with componentize-py
into a WebAssembly component for world `chunker` of wit/weft.wit.

It makes one chunk per paragraph (runs of lines separated by blank lines),
with ids `<doc id>#<n>` and `seq = n` from 0, so a replay overwrites rather
than duplicates. Each chunk carries its document's metadata. A document whose
id contains `#` or whose text is blank is an invalid input.

The class must be called `Chunk`, after the exported interface
`weft:plugin/chunk`.
"""

from typing import List

from componentize_py_types import Err, Ok, Result
from wit_world import exports
from wit_world.imports import types


def paragraphs(text: str) -> List[str]:
    """The paragraphs of `text`: runs of non-blank lines, stripped."""
    out: List[str] = []
    current: List[str] = []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line)
        elif current:
            out.append("\n".join(current).strip())
            current = []
    return out


def split_doc(doc: types.Document) -> List[types.Chunk]:
    """The chunks of one document; a ValueError says why there are none."""
    if not doc.id:
        raise ValueError("document id is empty")
    if "#" in doc.id:
        raise ValueError(
            f"document id `{doc.id}` contains `#`, which separates the document id "
            "from the chunk number in chunk ids"
        )
    parts = paragraphs(doc.text)
    if not parts:
        raise ValueError(f"document `{doc.id}` has no text")
    return [
        types.Chunk(id=f"{doc.id}#{n}", doc_id=doc.id, seq=n, text=p, metadata=list(doc.metadata))
        for n, p in enumerate(parts)
    ]


class Chunk(exports.Chunk):
    def split(self, docs: List[types.Document]) -> List[Result[List[types.Chunk], types.PluginError]]:
        """One result per document, in order; a bad document fails alone."""
        results: List[Result[List[types.Chunk], types.PluginError]] = []
        for doc in docs:
            try:
                results.append(Ok(split_doc(doc)))
            except ValueError as e:
                results.append(Err(types.PluginError(kind=types.ErrorKind.INVALID_INPUT, message=str(e))))
        return results
