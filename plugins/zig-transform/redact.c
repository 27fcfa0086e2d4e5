// See redact.h for the rules. Two passes over a record value: a strict JSON
// validator (so garbage is rejected and dead-lettered rather than half
// rewritten), then a copy that rewrites only the contents of string values.

#include "redact.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// Deeper nesting is rejected (as serde_json does, in the Rust version)
/// instead of risking the small wasm stack.
#define MAX_DEPTH 128

// --- buffer -------------------------------------------------------------------

static bool reserve(rbuf *b, size_t extra) {
  if (b->len + extra <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->ptr, cap);
  if (!p) return false;
  b->ptr = p;
  b->cap = cap;
  return true;
}

static bool put(rbuf *b, const void *s, size_t n) {
  if (n == 0) return true;
  if (!reserve(b, n)) return false;
  memcpy(b->ptr + b->len, s, n);
  b->len += n;
  return true;
}

// --- character classes (ASCII only: no UTF-8 lead or continuation byte is in one) ---

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_alpha(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_label(uint8_t c) { return is_alpha(c) || is_digit(c) || c == '-'; }
static bool is_local(uint8_t c) {
  return is_alpha(c) || is_digit(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

// --- the redaction passes ---------------------------------------------------------

/// E-mail pass; returns replacements made, or (size_t)-1 when out of memory.
static size_t emails(const uint8_t *s, size_t n, const char *mask, rbuf *out) {
  size_t count = 0, i = 0, mask_len = strlen(mask);
  while (i < n) {
    if (!is_local(s[i])) {
      if (!put(out, s + i, 1)) return (size_t)-1;
      i++;
      continue;
    }
    size_t j = i;
    while (j < n && is_local(s[j])) j++;
    if (!(j + 1 < n && s[j] == '@' && is_label(s[j + 1]))) {
      if (!put(out, s + i, j - i)) return (size_t)-1;
      i = j;
      continue;
    }
    // The domain: labels joined by single dots, as far as they go.
    size_t k = j + 1, labels = 0, last = k;
    for (;;) {
      last = k;
      while (k < n && is_label(s[k])) k++;
      labels++;
      if (k + 1 < n && s[k] == '.' && is_label(s[k + 1])) {
        k++;
        continue;
      }
      break;
    }
    bool tld = k - last >= 2;
    for (size_t t = last; tld && t < k; t++) tld = is_alpha(s[t]);
    if (labels >= 2 && tld) {
      if (!put(out, mask, mask_len)) return (size_t)-1;
      count++;
    } else if (!put(out, s + i, k - i)) {
      return (size_t)-1;
    }
    i = k;
  }
  return count;
}

/// Card pass; returns replacements made, or (size_t)-1 when out of memory.
static size_t cards(const uint8_t *s, size_t n, const char *mask, rbuf *out) {
  size_t count = 0, i = 0, mask_len = strlen(mask);
  while (i < n) {
    if (!is_digit(s[i])) {
      if (!put(out, s + i, 1)) return (size_t)-1;
      i++;
      continue;
    }
    size_t j = i + 1, digits = 1;
    while (j < n) {
      if (is_digit(s[j])) {
        j++;
        digits++;
      } else if ((s[j] == ' ' || s[j] == '-') && j + 1 < n && is_digit(s[j + 1])) {
        j += 2;
        digits++;
      } else {
        break;
      }
    }
    if (digits >= 13 && digits <= 19) {
      if (!put(out, mask, mask_len)) return (size_t)-1;
      count++;
    } else if (!put(out, s + i, j - i)) {
      return (size_t)-1;
    }
    i = j;
  }
  return count;
}

size_t redact_text(const uint8_t *s, size_t n, const redact_masks *masks, rbuf *out) {
  // Fast path: without '@' or a digit there is nothing to redact.
  bool maybe = false;
  for (size_t i = 0; i < n && !maybe; i++) maybe = s[i] == '@' || is_digit(s[i]);
  if (!maybe) return put(out, s, n) ? 0 : (size_t)-1;

  static rbuf tmp; // the e-mail pass's output, reused across calls
  tmp.len = 0;
  size_t a = emails(s, n, masks->email_mask, &tmp);
  if (a == (size_t)-1) return a;
  size_t b = cards(tmp.ptr, tmp.len, masks->card_mask, out);
  if (b == (size_t)-1) return b;
  return a + b;
}

// --- validation ----------------------------------------------------------------------

typedef struct {
  const uint8_t *s;
  size_t n, i;
  const char *why;
} parser;

static bool fail(parser *p, const char *why) {
  if (!p->why) p->why = why;
  return false;
}

static void skip_ws(parser *p) {
  while (p->i < p->n) {
    uint8_t c = p->s[p->i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->i++;
  }
}

static bool is_hex(uint8_t c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool string(parser *p) {
  p->i++; // opening quote
  while (p->i < p->n) {
    uint8_t c = p->s[p->i];
    if (c == '"') {
      p->i++;
      return true;
    }
    if (c < 0x20) return fail(p, "control character in a string");
    if (c == '\\') {
      if (p->i + 1 >= p->n) break;
      uint8_t e = p->s[p->i + 1];
      if (e == 'u') {
        if (p->i + 5 >= p->n) break;
        for (int k = 2; k < 6; k++)
          if (!is_hex(p->s[p->i + k])) return fail(p, "bad \\u escape");
        p->i += 6;
      } else if (e != 0 && strchr("\"\\/bfnrt", e)) {
        p->i += 2;
      } else {
        return fail(p, "bad escape");
      }
      continue;
    }
    p->i++;
  }
  return fail(p, "unterminated string");
}

static bool digits(parser *p) {
  size_t start = p->i;
  while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
  return p->i > start;
}

static bool number(parser *p) {
  if (p->s[p->i] == '-') p->i++;
  if (p->i < p->n && p->s[p->i] == '0') {
    p->i++;
  } else if (!digits(p)) {
    return fail(p, "bad number");
  }
  if (p->i < p->n && p->s[p->i] == '.') {
    p->i++;
    if (!digits(p)) return fail(p, "bad number");
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (!digits(p)) return fail(p, "bad number");
  }
  return true;
}

static bool literal(parser *p, const char *word) {
  size_t k = strlen(word);
  if (p->n - p->i < k || memcmp(p->s + p->i, word, k) != 0) return fail(p, "expected a value");
  p->i += k;
  return true;
}

static bool value(parser *p, int depth) {
  skip_ws(p);
  if (p->i >= p->n) return fail(p, "expected a value");
  if (depth > MAX_DEPTH) return fail(p, "nested too deeply");
  uint8_t c = p->s[p->i];
  switch (c) {
  case '"':
    return string(p);
  case 't':
    return literal(p, "true");
  case 'f':
    return literal(p, "false");
  case 'n':
    return literal(p, "null");
  case '{':
  case '[': {
    uint8_t close = c == '{' ? '}' : ']';
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
      p->i++;
      return true;
    }
    for (;;) {
      if (c == '{') {
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != '"') return fail(p, "expected a key");
        if (!string(p)) return false;
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') return fail(p, "expected ':'");
        p->i++;
      }
      if (!value(p, depth + 1)) return false;
      skip_ws(p);
      if (p->i < p->n && p->s[p->i] == ',') {
        p->i++;
        continue;
      }
      if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return true;
      }
      return fail(p, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  default:
    if (c == '-' || is_digit(c)) return number(p);
    return fail(p, "expected a value");
  }
}

/// Index of the first byte that is not part of valid UTF-8, or `n`.
static size_t utf8_valid_up_to(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      k = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      k = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      k = 3;
      cp = c & 0x07;
    } else {
      return i;
    }
    for (size_t j = 1; j <= k; j++) {
      if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + j] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return i;
    i += k + 1;
  }
  return n;
}

// --- the copy ----------------------------------------------------------------------------

redact_status redact_json(const uint8_t *in, size_t len, const redact_masks *masks, rbuf *out,
                          size_t *count, char *err, size_t errlen) {
  *count = 0;
  size_t bad = utf8_valid_up_to(in, len);
  if (bad < len) {
    snprintf(err, errlen, "record value is not valid UTF-8 (at byte %zu)", bad);
    return REDACT_INVALID;
  }
  parser p = {in, len, 0, NULL};
  bool ok = value(&p, 0);
  if (ok) {
    skip_ws(&p);
    if (p.i < len) ok = fail(&p, "trailing characters after the value");
  }
  if (!ok) {
    snprintf(err, errlen, "record value is not valid JSON: %s at byte %zu", p.why, p.i);
    return REDACT_INVALID;
  }
  if (!reserve(out, len)) return REDACT_NOMEM;

  // The text is valid JSON, so outside strings there are no quotes, and a
  // string followed (after blanks) by ':' is an object key.
  size_t i = 0;
  while (i < len) {
    size_t q = i;
    while (q < len && in[q] != '"') q++;
    if (!put(out, in + i, q - i)) return REDACT_NOMEM;
    if (q == len) break;
    // The string's contents run from q+1 to the closing quote at e.
    size_t e = q + 1;
    while (in[e] != '"') e += in[e] == '\\' ? 2 : 1;
    size_t after = e + 1;
    while (after < len && (in[after] == ' ' || in[after] == '\t' || in[after] == '\n' ||
                           in[after] == '\r'))
      after++;
    bool key = after < len && in[after] == ':';
    if (key) {
      if (!put(out, in + q, e + 1 - q)) return REDACT_NOMEM;
    } else {
      if (!put(out, "\"", 1)) return REDACT_NOMEM;
      size_t s = q + 1;
      while (s < e) {
        // Plain text up to the next escape, then the escape itself.
        size_t t = s;
        while (t < e && in[t] != '\\') t++;
        size_t n = redact_text(in + s, t - s, masks, out);
        if (n == (size_t)-1) return REDACT_NOMEM;
        *count += n;
        if (t < e) {
          size_t esc = in[t + 1] == 'u' ? 6 : 2;
          if (!put(out, in + t, esc)) return REDACT_NOMEM;
          t += esc;
        }
        s = t;
      }
      if (!put(out, "\"", 1)) return REDACT_NOMEM;
    }
    i = e + 1;
  }
  return REDACT_OK;
}
