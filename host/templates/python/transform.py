"""{{name}}: a weft `transform` stage in Python, built with componentize-py
into a WebAssembly component for world `transformer` of wit/weft.wit.

It passes every record through and sets one header, `processed-by: {{name}}`
unless the stage's config in pipeline.toml says otherwise:

    config = { header = "processed-by", value = "{{name}}" }

Keys, values (tombstones too) and the other headers pass through as they are.
The class must be called `Transform`, after the exported interface
`weft:plugin/transform`.
"""

from typing import List, Optional, Tuple

from componentize_py_types import Ok, Result
from wit_world import exports
from wit_world.imports import config, types

DEFAULT_HEADER = "processed-by"
DEFAULT_VALUE = "{{name}}"

# Read on the first call, not at import: the module's top level runs at build
# time, when there is no host to ask.
_header: Optional[Tuple[str, bytes]] = None


def header() -> Tuple[str, bytes]:
    """The header's name and value, from the config."""
    global _header
    if _header is None:
        name = config.get("header") or DEFAULT_HEADER
        value = config.get("value")
        _header = (name, (DEFAULT_VALUE if value is None else value).encode())
    return _header


class Transform(exports.Transform):
    def transform(self, records: List[types.Record]) -> List[Result[List[types.Record], types.PluginError]]:
        """One result per input record, in order: here always one record."""
        name, value = header()
        out: List[Result[List[types.Record], types.PluginError]] = []
        for r in records:
            headers = [h for h in r.headers if h.key != name]
            headers.append(types.Header(key=name, value=value))
            out.append(Ok([types.Record(key=r.key, value=r.value, headers=headers)]))
        return out
