// The same cases as plugins/zig-transform/test_redact.c: `node --test` here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redactor } from './redact.js';

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);

const CASES = [
  [String.raw`{ "a" : 1.50, "b": [true, null, "x"] }`, String.raw`{ "a" : 1.50, "b": [true, null, "x"] }`, 0],
  [String.raw`{"jo@x.com":"mail jo.doe+tag@mail.example.org now"}`, String.raw`{"jo@x.com":"mail [email] now"}`, 1],
  [String.raw`["a@b","a@b.c","a@b.c1","@x.com"]`, String.raw`["a@b","a@b.c","a@b.c1","@x.com"]`, 0],
  [String.raw`"see a@b.com.\nb@c.de"`, String.raw`"see [email].\n[email]"`, 2],
  [String.raw`"\u0040x.com a\u0040x.com"`, String.raw`"\u0040x.com a\u0040x.com"`, 0],
  ['"4111 1111 1111 1111, 4111-1111-1111-1111 and 4111111111111"', '"[card], [card] and [card]"', 3],
  [
    '"12345678901234567890 123456789012 12--34 1234  5678 9012 3456"',
    '"12345678901234567890 123456789012 12--34 1234  5678 9012 3456"',
    0,
  ],
  ['{"n":4111111111111111}', '{"n":4111111111111111}', 0],
  ['"é 4111111111111111 ü x4111111111111111@y.io"', '"é [card] ü [email]"', 2],
];

test('redaction cases', () => {
  const r = new Redactor();
  for (const [given, want, n] of CASES) {
    const [out, count] = r.json(enc(given));
    assert.equal(dec(out), want, given);
    assert.equal(count, n, given);
  }
});

test('masks and invalid input', () => {
  const [out] = new Redactor('<e>', '<c>').json(enc('"a@b.io 4111111111111111"'));
  assert.equal(dec(out), '"<e> <c>"');
  for (const [given, why] of [
    [enc('not json'), /not valid JSON/],
    [enc('{"a":1,}'), /not valid JSON/],
    [enc('{"a":1} x'), /not valid JSON/],
    [new Uint8Array([0x22, 0xff, 0x22]), /not valid UTF-8/],
    [enc(''), /not valid JSON/],
  ]) {
    assert.throws(() => new Redactor().json(given), why);
  }
});
