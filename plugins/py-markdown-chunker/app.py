"""py-markdown-chunker: a weft `chunker` stage written in Python.

Splits markdown documents at headings first, then at paragraphs (see
mdchunk.py). Each chunk carries the document's metadata, its `title`, and
`section`: the heading path of the chunk, like ``"Baggage > Checked bags"``
(absent for text before the first heading). Chunk ids are `<doc id>#<n>`.

Configuration (optional):
- `max_chars` (800): the largest chunk, in characters.

Built with componentize-py against world `chunker` of wit/weft.wit; see
scripts/build-polyglot-plugins. The class below must be called `Chunk`, after
the exported interface `weft:plugin/chunk`.
"""

from typing import List, Optional, Union

import mdchunk
from componentize_py_types import Err, Ok, Result
from wit_world import exports
from wit_world.imports import config, log, types

KNOWN_KEYS = {"max_chars"}

# Read once per instance, on the first call: the host's config import cannot
# be called while componentize-py pre-initialises the module at build time.
_settings: Optional[Union[int, ValueError]] = None


def settings() -> Union[int, ValueError]:
    """The max_chars value, or a ValueError explaining the bad config."""
    global _settings
    if _settings is None:
        for key, _ in config.entries():
            if key not in KNOWN_KEYS:
                log.log(log.Level.WARN, f"unknown config key `{key}` is ignored")
        try:
            _settings = mdchunk.parse_max_chars(config.get("max_chars"))
        except ValueError as e:
            log.log(log.Level.ERROR, str(e))
            _settings = e
    return _settings


def split_doc(doc: types.Document, max_chars: int) -> List[types.Chunk]:
    mdchunk.check_doc_id(doc.id)
    # The document's metadata, less what this chunker sets itself: `section`,
    # and `title` when the document has one (the field is authoritative).
    own = {"section", "title"} if doc.title is not None else {"section"}
    meta = [m for m in doc.metadata if m.key not in own]
    if doc.title is not None:
        meta.append(types.Meta(key="title", value=doc.title))
    out = []
    for c in mdchunk.chunk_markdown(doc.text, max_chars):
        m = list(meta)
        if c.section:
            m.append(types.Meta(key="section", value=c.section))
        out.append(
            types.Chunk(id=f"{doc.id}#{c.seq}", doc_id=doc.id, seq=c.seq, text=c.text, metadata=m)
        )
    return out


class Chunk(exports.Chunk):
    def split(self, docs: List[types.Document]) -> List[Result[List[types.Chunk], types.PluginError]]:
        s = settings()
        if isinstance(s, ValueError):
            err = types.PluginError(kind=types.ErrorKind.CONFIG, message=str(s))
            return [Err(err) for _ in docs]
        results: List[Result[List[types.Chunk], types.PluginError]] = []
        for doc in docs:
            try:
                results.append(Ok(split_doc(doc, s)))
            except ValueError as e:
                results.append(Err(types.PluginError(kind=types.ErrorKind.INVALID_INPUT, message=str(e))))
        return results
