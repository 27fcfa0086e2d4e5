// Prompt rendering, independent of the component bindings so it can be unit
// tested with plain Node (`node --test` in this directory).
//
// All lengths are counted in Unicode code points (not UTF-16 units), like the
// Rust plugins' `chars().count()`, so budgets mean the same in every language.

/** The system message used when the config sets none. `[n]` = the n-th hit,
 * the convention the generators parse back. */
export const DEFAULT_SYSTEM =
  'You answer questions using only the numbered context passages provided. ' +
  'Cite every passage you use by its number in square brackets, like [1] or [2][3]. ' +
  "If the context does not contain the answer, say that you don't know.";

/** Budget for the rendered context, in characters (about 1,500 tokens). */
export const DEFAULT_MAX_CONTEXT_CHARS = 6000;

/** Rendered instead of an empty context, so the model sees retrieval found nothing. */
export const NO_CONTEXT = '(no relevant context was found)';

/** A passage that only partly fits is cut to fit only if this much survives. */
const MIN_PARTIAL_CHARS = 100;

const KNOWN_KEYS = new Set(['system', 'max_context_chars']);

const length = (s) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/** The first `n` code points of `s`. */
const take = (s, n) => {
  let out = '';
  let i = 0;
  for (const ch of s) {
    if (i++ >= n) break;
    out += ch;
  }
  return out;
};

/**
 * Parses the stage config (`[key, value]` pairs as given by
 * `weft:plugin/config.entries`). Returns `{ settings, warnings }` or throws an
 * Error whose message explains the bad value.
 */
export function parseConfig(entries) {
  const settings = { system: DEFAULT_SYSTEM, maxContextChars: DEFAULT_MAX_CONTEXT_CHARS };
  const warnings = [];
  for (const [key, value] of entries) {
    if (key === 'system') {
      settings.system = value;
    } else if (key === 'max_context_chars') {
      const v = value.trim().replace(/^"|"$/g, '');
      if (!/^\d+$/.test(v) || Number(v) < 1) {
        throw new Error(`config \`max_context_chars\` must be a positive integer, not ${JSON.stringify(value)}`);
      }
      settings.maxContextChars = Number(v);
    } else if (!KNOWN_KEYS.has(key)) {
      warnings.push(`unknown config key \`${key}\` is ignored`);
    }
  }
  return { settings, warnings };
}

/** At most `max` code points of `s`, ending with `…`, cut after a whole word
 * unless that would drop more than half of the room. */
function truncateWords(s, max) {
  const keep = Math.max(0, max - 1);
  let head = take(s, keep);
  const space = head.lastIndexOf(' ');
  if (space >= 0 && length(head.slice(0, space)) * 2 >= keep) head = head.slice(0, space);
  return `${head.trimEnd()}…`;
}

/** The label of a hit in the context: its doc id, and the section of the
 * document it comes from when the chunker recorded one. */
function label(hit) {
  const section = (hit.metadata || []).find((m) => m.key === 'section');
  return section && section.value ? `doc ${hit.docId}; ${section.value}` : `doc ${hit.docId}`;
}

/**
 * Lists hits as `[n] (doc <id>[; <section>]) <text>`, numbered from 1 in hit
 * order, separated by blank lines, within `maxChars` code points. Whitespace
 * in a passage is collapsed so each passage is one paragraph. Passages that do
 * not fit are left out from the end, so `[n]` always means the n-th hit; the
 * last one included may be cut at a word boundary (marked with `…`).
 */
export function renderContext(hits, maxChars) {
  if (hits.length === 0) return NO_CONTEXT;
  let out = '';
  let used = 0;
  for (let i = 0; i < hits.length; i++) {
    const head = `${i === 0 ? '' : '\n\n'}[${i + 1}] (${label(hits[i])}) `;
    const text = hits[i].text.split(/\s+/).filter(Boolean).join(' ');
    const headLen = length(head);
    const textLen = length(text);
    if (used + headLen + textLen <= maxChars) {
      out += head + text;
      used += headLen + textLen;
      continue;
    }
    const room = maxChars - used - headLen;
    if (room >= MIN_PARTIAL_CHARS || (i === 0 && room > 1)) {
      out += head + truncateWords(text, room);
    }
    break;
  }
  return out;
}

/**
 * The chat messages for a question and its hits: the system message, then
 * the user message with the numbered context and the question. Throws an
 * Error for an empty question.
 */
export function buildMessages(question, hits, settings) {
  const q = question.text.trim();
  if (!q) throw new Error('question text is empty');
  const context = renderContext(hits, settings.maxContextChars);
  return [
    { role: 'system', content: settings.system },
    { role: 'user', content: `Context:\n${context}\n\nQuestion: ${q}` },
  ];
}
