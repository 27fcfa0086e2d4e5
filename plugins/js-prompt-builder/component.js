// js-prompt-builder: a weft `prompt-builder` stage written in JavaScript.
//
// Turns a question and its retrieved hits into a system message and a user
// message with the hits as numbered context `[1]`, `[2]`, ... (see prompt.js).
//
// Configuration (all optional):
// - `system`: the system message (default: answer from the numbered context
//   only, cite passages as [n]).
// - `max_context_chars` (6000): budget for the rendered context.
//
// Built with componentize-js against world `prompt-builder` of wit/weft.wit
// (scripts/build-polyglot-plugins). Binding conventions of componentize-js:
// the exported interface `weft:plugin/prompt` is the exported object
// `prompt`; WIT records are objects with camelCase fields (`docId`); enums
// are their WIT names as strings; an exported function returning `result`
// returns the ok value and reports the error by throwing `{ payload: err }`
// (throwing an `Error` instead would trap the instance).

import { entries } from 'weft:plugin/config@0.1.0';
import { log } from 'weft:plugin/log@0.1.0';
import { buildMessages, parseConfig } from './prompt.js';

// Read once per instance, on the first call: imports cannot be called while
// the module is pre-initialised at build time.
let config;

function settings() {
  if (config === undefined) {
    try {
      const { settings, warnings } = parseConfig(entries());
      warnings.forEach((w) => log('warn', w));
      config = { settings };
    } catch (e) {
      log('error', e.message);
      config = { error: e.message };
    }
  }
  return config;
}

const fail = (kind, message) => ({ payload: { kind, message } });

export const prompt = {
  build(question, hits) {
    const { settings: s, error } = settings();
    if (error) throw fail('config', error);
    try {
      return buildMessages(question, hits, s);
    } catch (e) {
      throw fail('invalid-input', e.message);
    }
  },
};
