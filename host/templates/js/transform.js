// {{name}}: a weft `transform` stage in JavaScript, built with componentize-js
// into a WebAssembly component for world `transformer` of wit/weft.wit.
//
// It passes every record through and sets one header, `processed-by: {{name}}`
// unless the stage's config in pipeline.toml says otherwise:
//
//     config = { header = "processed-by", value = "{{name}}" }
//
// Keys, values (tombstones too) and the other headers pass through as they
// are. componentize-js conventions: the exported interface
// `weft:plugin/transform` is the exported object `transform`; `list<u8>` is a
// Uint8Array, `option<T>` is undefined or the value; a `result` inside a
// returned list is `{ tag: 'ok', val }` or `{ tag: 'err', val }`.

import { get } from 'weft:plugin/config@0.1.0';

const DEFAULT_HEADER = 'processed-by';
const DEFAULT_VALUE = '{{name}}';

// Read on the first call: imports cannot be called at build time.
let header;

function getHeader() {
  if (header === undefined) {
    const value = get('value');
    header = {
      name: get('header') || DEFAULT_HEADER,
      value: new TextEncoder().encode(value ?? DEFAULT_VALUE),
    };
  }
  return header;
}

export const transform = {
  // One result per input record, in order: here always one record.
  transform(records) {
    const { name, value } = getHeader();
    return records.map((r) => ({
      tag: 'ok',
      val: [{ key: r.key, value: r.value, headers: [...r.headers.filter((h) => h.key !== name), { key: name, value }] }],
    }));
  },
};
