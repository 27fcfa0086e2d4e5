// Redaction of e-mail addresses and card-like numbers in JSON text,
// independent of the component bindings (unit-tested natively by
// test_redact.c).
//
// The rules, shared byte for byte with rust-redact-transform,
// py-redact-transform and js-redact-transform (docs/plugins.md):
//
// - Only the *values* of JSON strings are rewritten: object keys, numbers and
//   everything outside strings pass through unchanged, byte for byte. Escape
//   sequences (`\n`, `\u0040`, ...) are copied as they are and split the text
//   around them, so a match never spans one.
// - E-mail: a maximal run of [A-Za-z0-9._%+-] followed by `@` and a domain:
//   labels of [A-Za-z0-9-] joined by single dots, taken as far as they go.
//   The whole match is replaced by the e-mail mask ("[email]") when the
//   domain has at least two labels and the last is two or more ASCII letters;
//   otherwise it is left as it is and scanning resumes after it.
// - Card-like number: a maximal run of digits in which single spaces or
//   hyphens may separate digits (`4111 1111-1111 1111`). It is replaced by the
//   card mask ("[card]") when it holds 13 to 19 digits. E-mails are redacted
//   first, so digits inside an address count as part of the address.
#ifndef WEFT_REDACT_H
#define WEFT_REDACT_H

#include <stddef.h>
#include <stdint.h>

/// A growable byte buffer owned by its user (malloc'd).
typedef struct {
  uint8_t *ptr;
  size_t len;
  size_t cap;
} rbuf;

typedef struct {
  const char *email_mask;
  const char *card_mask;
} redact_masks;

typedef enum {
  REDACT_OK = 0,
  /// Not UTF-8, or not JSON; `err` says why.
  REDACT_INVALID = 1,
  /// Out of memory.
  REDACT_NOMEM = 2,
} redact_status;

/// Validates `in` as UTF-8 JSON and appends it to `out` with the strings'
/// values redacted. `*count` receives the number of replacements; on
/// REDACT_INVALID, `err` (of `errlen` bytes) receives a NUL-terminated reason.
redact_status redact_json(const uint8_t *in, size_t len, const redact_masks *masks, rbuf *out,
                          size_t *count, char *err, size_t errlen);

/// Redacts one stretch of plain text (no JSON escapes): e-mails first, then
/// card-like numbers. Appends to `out`; returns the number of replacements,
/// or (size_t)-1 when out of memory.
size_t redact_text(const uint8_t *s, size_t n, const redact_masks *masks, rbuf *out);

#endif
