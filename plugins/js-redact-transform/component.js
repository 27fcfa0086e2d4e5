// js-redact-transform: the redaction transform of rust-redact-transform,
// written in JavaScript (componentize-js, world `transformer`), for the
// polyglot benchmark and as a second JavaScript example.
//
// Redacts e-mail addresses and card-like numbers in the string values of JSON
// records (redact.js) and sets the header `weft.redactions` to the number of
// replacements (0 for a clean record, whose value passes through byte for
// byte). Keys and other headers pass through; tombstones pass through
// untouched; a value that is not UTF-8 JSON is an invalid-input error.
//
// Configuration (optional): `email_mask` ("[email]"), `card_mask` ("[card]").
//
// componentize-js conventions: list<u8> is a Uint8Array, option<T> is
// undefined (or null) or the value; a `result` inside a returned list is an
// object `{ tag: 'ok', val }` or `{ tag: 'err', val }`.

import { entries } from 'weft:plugin/config@0.1.0';
import { log } from 'weft:plugin/log@0.1.0';
import { Redactor } from './redact.js';

const HEADER = 'weft.redactions';
const encoder = new TextEncoder();

// Made on the first call: imports cannot be called at build time.
let redactor;

function getRedactor() {
  if (!redactor) {
    const masks = {};
    for (const [key, value] of entries()) {
      if (key === 'email_mask' || key === 'card_mask') masks[key] = value;
      else log('warn', `unknown config key \`${key}\` is ignored`);
    }
    redactor = new Redactor(masks.email_mask, masks.card_mask);
  }
  return redactor;
}

function transformOne(record, red) {
  if (record.value === undefined || record.value === null) return { tag: 'ok', val: [record] };
  let value, count;
  try {
    [value, count] = red.json(record.value);
  } catch (e) {
    return { tag: 'err', val: { kind: 'invalid-input', message: e.message } };
  }
  const mark = encoder.encode(String(count));
  const headers = record.headers.map((h) => (h.key === HEADER ? { key: HEADER, value: mark } : h));
  if (!headers.some((h) => h.key === HEADER)) headers.push({ key: HEADER, value: mark });
  return { tag: 'ok', val: [{ key: record.key, value, headers }] };
}

export const transform = {
  transform(records) {
    const red = getRedactor();
    return records.map((r) => transformOne(r, red));
  },
};
