// E-mail and card-number redaction in JSON text, independent of the component
// bindings (unit-tested with plain Node: `node --test` here).
//
// The rules are those of plugins/rust-redact-transform/src/redact.rs (and of
// the C and Python versions), as regular expressions over the decoded text:
// every class is ASCII, so characters and UTF-8 bytes give the same matches.

// A JSON string literal, and, when it is an object key, the blanks and colon after it.
const STRING = /"([^"\\]*(?:\\.[^"\\]*)*)"([ \t\n\r]*:)?/g;
// An escape sequence inside a string literal.
const ESCAPE = /(\\(?:u[0-9A-Fa-f]{4}|.))/;
// An e-mail candidate: local part, '@', dot-separated labels as far as they go.
const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*/g;
// A card-like candidate: digits, single spaces or hyphens between digits.
const CARD = /[0-9](?:[ -]?[0-9])*/g;
const MAYBE = /[@0-9]/;
const ALPHA = /^[A-Za-z]{2,}$/;

const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export class Redactor {
  constructor(emailMask = '[email]', cardMask = '[card]') {
    this.emailMask = emailMask;
    this.cardMask = cardMask;
    this.count = 0;
  }

  /** Redacts plain text (no JSON escapes): e-mails first, then cards. */
  text(s) {
    if (!MAYBE.test(s)) return s;
    const emails = s.replace(EMAIL, (m) => {
      const labels = m.slice(m.indexOf('@') + 1).split('.');
      if (labels.length >= 2 && ALPHA.test(labels[labels.length - 1])) {
        this.count++;
        return this.emailMask;
      }
      return m;
    });
    return emails.replace(CARD, (m) => {
      const digits = m.length - (m.match(/[ -]/g)?.length ?? 0);
      if (digits >= 13 && digits <= 19) {
        this.count++;
        return this.cardMask;
      }
      return m;
    });
  }

  /**
   * Validates `bytes` (a Uint8Array) as UTF-8 JSON; returns `[bytes, count]`
   * with its string values redacted. Throws an Error explaining bad input.
   */
  json(bytes) {
    let text;
    try {
      text = decoder.decode(bytes);
    } catch {
      throw new Error('record value is not valid UTF-8');
    }
    try {
      JSON.parse(text);
    } catch (e) {
      throw new Error(`record value is not valid JSON: ${e.message}`);
    }
    this.count = 0;
    const out = text.replace(STRING, (m, body, colon) => {
      if (colon !== undefined) return m; // an object key
      const parts = body.split(ESCAPE); // text, escape, text, ..., text
      for (let i = 0; i < parts.length; i += 2) parts[i] = this.text(parts[i]);
      return `"${parts.join('')}"`;
    });
    return [this.count ? encoder.encode(out) : bytes, this.count];
  }
}
