"""{{name}}: a weft `prompt-builder` stage in Python, built with
componentize-py into a WebAssembly component for world `prompt-builder` of
wit/weft.wit.

It turns a question and its hits into two chat messages: a system message,
and a user message with the hits as numbered context (`[1] (doc <id>) <text>`,
the convention generators parse citations back from) followed by the
question. An empty question is an invalid input.

Configuration (optional), in pipeline.toml: `system`, the system message.

The class must be called `Prompt`, after the exported interface
`weft:plugin/prompt`. An exported function returning `result` reports its
error by raising `componentize_py_types.Err`.
"""

from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, types

DEFAULT_SYSTEM = (
    "Answer the question using only the numbered context passages. "
    "Cite each passage you use by its number in square brackets, like [1]. "
    "If the context does not contain the answer, say that you don't know."
)
NO_CONTEXT = "(no context was found)"

# Read on the first call, not at import: the module's top level runs at build
# time, when there is no host to ask.
_system: Optional[str] = None


def system() -> str:
    global _system
    if _system is None:
        s = config.get("system")
        _system = DEFAULT_SYSTEM if s is None else s
    return _system


def user_message(question: str, hits: List[types.Hit]) -> str:
    """The numbered context, then the question; a ValueError for an empty question."""
    q = question.strip()
    if not q:
        raise ValueError("the question's text is empty")
    if hits:
        context = "\n\n".join(f"[{i}] (doc {h.doc_id}) {h.text.strip()}" for i, h in enumerate(hits, 1))
    else:
        context = NO_CONTEXT
    return f"Context:\n{context}\n\nQuestion: {q}"


class Prompt(exports.Prompt):
    def build(self, question: types.Question, hits: List[types.Hit]) -> List[types.Message]:
        try:
            user = user_message(question.text, hits)
        except ValueError as e:
            raise Err(types.PluginError(kind=types.ErrorKind.INVALID_INPUT, message=str(e)))
        return [
            types.Message(role=types.Role.SYSTEM, content=system()),
            types.Message(role=types.Role.USER, content=user),
        ]
