// Unit tests of the rendering, with plain Node: `node --test` in this directory.
// (The component as a whole is tested through weft in tests/polyglot.rs.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildMessages, DEFAULT_SYSTEM, NO_CONTEXT, parseConfig, renderContext } from './prompt.js';

const hit = (docId, text, section) => ({
  chunkId: `${docId}#0`,
  docId,
  score: 0.5,
  text,
  metadata: section ? [{ key: 'section', value: section }] : [],
});

test('numbers the context and labels sections', () => {
  const { settings } = parseConfig([]);
  const msgs = buildMessages({ id: 'q', text: ' How much? ', metadata: [] }, [
    hit('baggage', 'Bags cost\n\n60 EUR.', 'Baggage > Checked'),
    hit('pets', 'Pets fly.'),
  ], settings);
  assert.deepEqual(msgs, [
    { role: 'system', content: DEFAULT_SYSTEM },
    {
      role: 'user',
      content:
        'Context:\n[1] (doc baggage; Baggage > Checked) Bags cost 60 EUR.\n\n[2] (doc pets) Pets fly.\n\nQuestion: How much?',
    },
  ]);
});

test('context respects the budget in code points', () => {
  const long = 'wörd '.repeat(100);
  const hits = [hit('a', long), hit('b', long), hit('c', long)];
  for (const max of [50, 300, 600, 1000, 5000]) {
    const ctx = renderContext(hits, max);
    assert.ok([...ctx].length <= max, `${max}: ${[...ctx].length}`);
    assert.ok(ctx.startsWith('[1] (doc a) wörd'));
  }
  const ctx = renderContext(hits, 700);
  assert.ok(ctx.includes('[2] (doc b)'));
  assert.ok(ctx.endsWith('wörd…'), ctx);
  assert.ok(!ctx.includes('[3]'));
});

test('no hits, empty question, config', () => {
  assert.equal(renderContext([], 100), NO_CONTEXT);
  const { settings } = parseConfig([['max_context_chars', '1200'], ['system', 'Be brief.']]);
  assert.equal(settings.maxContextChars, 1200);
  assert.equal(settings.system, 'Be brief.');
  assert.throws(() => buildMessages({ text: '  ' }, [], settings), /empty/);
  for (const bad of ['0', 'lots', '-3', '1.5']) {
    assert.throws(() => parseConfig([['max_context_chars', bad]]), /max_context_chars/);
  }
  assert.deepEqual(parseConfig([['colour', 'red']]).warnings, ['unknown config key `colour` is ignored']);
});
