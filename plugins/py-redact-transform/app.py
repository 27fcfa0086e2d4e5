"""py-redact-transform: the redaction transform of rust-redact-transform,
written in Python (componentize-py, world `transformer`), for the polyglot
benchmark and as a second Python example.

Redacts e-mail addresses and card-like numbers in the string values of JSON
records (redact.py) and sets the header `weft.redactions` to the number of
replacements (0 for a clean record, whose value passes through byte for
byte). Keys and other headers pass through; tombstones pass through
untouched; a value that is not UTF-8 JSON is an invalid-input error.

Configuration (optional): `email_mask` ("[email]"), `card_mask` ("[card]").
"""

from typing import List, Optional

from componentize_py_types import Err, Ok, Result
from redact import Redactor
from wit_world import exports
from wit_world.imports import config, log, types

HEADER = "weft.redactions"

# Made on the first call: config cannot be read while componentize-py
# pre-initialises the module at build time.
_redactor: Optional[Redactor] = None


def redactor() -> Redactor:
    global _redactor
    if _redactor is None:
        masks = {}
        for key, value in config.entries():
            if key in ("email_mask", "card_mask"):
                masks[key] = value
            else:
                log.log(log.Level.WARN, f"unknown config key `{key}` is ignored")
        _redactor = Redactor(**masks)
    return _redactor


def transform_one(r: types.Record, red: Redactor) -> Result[List[types.Record], types.PluginError]:
    if r.value is None:
        return Ok([r])
    try:
        value, count = red.json(r.value)
    except ValueError as e:
        return Err(types.PluginError(kind=types.ErrorKind.INVALID_INPUT, message=str(e)))
    headers = [h for h in r.headers]
    mark = str(count).encode()
    for h in headers:
        if h.key == HEADER:
            h.value = mark
            break
    else:
        headers.append(types.Header(key=HEADER, value=mark))
    return Ok([types.Record(key=r.key, value=value if count else r.value, headers=headers)])


class Transform(exports.Transform):
    def transform(self, records: List[types.Record]) -> List[Result[List[types.Record], types.PluginError]]:
        red = redactor()
        return [transform_one(r, red) for r in records]
