// {{name}}: a weft `prompt-builder` stage in JavaScript, built with
// componentize-js into a WebAssembly component for world `prompt-builder` of
// wit/weft.wit.
//
// It turns a question and its hits into two chat messages: a system message,
// and a user message with the hits as numbered context (`[1] (doc <id>)
// <text>`, the convention generators parse citations back from) followed by
// the question. An empty question is an invalid input.
//
// Configuration (optional), in pipeline.toml: `system`, the system message.
//
// componentize-js conventions: the exported interface `weft:plugin/prompt` is
// the exported object `prompt`; records are objects with camelCase fields
// (`docId`); enums are their WIT names as strings (`'system'`); a function
// returning `result` returns the ok value and reports the error by throwing
// `{ payload: err }` (throwing an Error instead would trap the instance).

import { get } from 'weft:plugin/config@0.1.0';

const DEFAULT_SYSTEM =
  'Answer the question using only the numbered context passages. ' +
  'Cite each passage you use by its number in square brackets, like [1]. ' +
  "If the context does not contain the answer, say that you don't know.";
const NO_CONTEXT = '(no context was found)';

// Read on the first call: imports cannot be called at build time.
let system;

/** The numbered context, then the question; throws an Error for an empty question. */
function userMessage(question, hits) {
  const q = question.trim();
  if (!q) throw new Error("the question's text is empty");
  const context =
    hits.length > 0 ? hits.map((h, i) => `[${i + 1}] (doc ${h.docId}) ${h.text.trim()}`).join('\n\n') : NO_CONTEXT;
  return `Context:\n${context}\n\nQuestion: ${q}`;
}

export const prompt = {
  build(question, hits) {
    if (system === undefined) system = get('system') ?? DEFAULT_SYSTEM;
    let user;
    try {
      user = userMessage(question.text, hits);
    } catch (e) {
      throw { payload: { kind: 'invalid-input', message: e.message } };
    }
    return [
      { role: 'system', content: system },
      { role: 'user', content: user },
    ];
  },
};
