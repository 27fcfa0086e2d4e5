// Native unit tests of redact.c:
//   python -m ziglang cc -O1 -o /tmp/test_redact test_redact.c redact.c && /tmp/test_redact
// (tests/polyglot.rs runs them; the component is tested through weft there too).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"

static int failures = 0;
static const redact_masks MASKS = {"[email]", "[card]"};

static void expect(const char *in, const char *want, size_t want_count) {
  rbuf out = {0};
  size_t count = 0;
  char err[160] = "";
  redact_status st = redact_json((const uint8_t *)in, strlen(in), &MASKS, &out, &count, err, sizeof err);
  if (st != REDACT_OK || out.len != strlen(want) || memcmp(out.ptr, want, out.len) != 0 ||
      count != want_count) {
    failures++;
    fprintf(stderr, "FAIL %s\n  want %s (%zu)\n  got  %.*s (%zu) %s\n", in, want, want_count,
            (int)out.len, out.ptr ? (char *)out.ptr : "", count, err);
  }
  free(out.ptr);
}

static void invalid(const char *in, size_t len, const char *why) {
  rbuf out = {0};
  size_t count = 0;
  char err[160] = "";
  if (redact_json((const uint8_t *)in, len, &MASKS, &out, &count, err, sizeof err) != REDACT_INVALID ||
      !strstr(err, why)) {
    failures++;
    fprintf(stderr, "FAIL %.*s should be invalid (%s), got: %s\n", (int)len, in, why, err);
  }
  free(out.ptr);
}

int main(void) {
  // Clean values pass byte for byte, formatting included.
  expect("{ \"a\" : 1.50, \"b\": [true, null, \"x\"] }", "{ \"a\" : 1.50, \"b\": [true, null, \"x\"] }", 0);
  // E-mails, keys untouched.
  expect("{\"jo@x.com\":\"mail jo.doe+tag@mail.example.org now\"}",
         "{\"jo@x.com\":\"mail [email] now\"}", 1);
  // Not e-mails: no dot in the domain, one-letter or digit TLD.
  expect("[\"a@b\",\"a@b.c\",\"a@b.c1\",\"@x.com\"]", "[\"a@b\",\"a@b.c\",\"a@b.c1\",\"@x.com\"]", 0);
  // A trailing dot ends the domain; an escape splits the text.
  expect("\"see a@b.com.\\nb@c.de\"", "\"see [email].\\n[email]\"", 2);
  expect("\"\\u0040x.com a\\u0040x.com\"", "\"\\u0040x.com a\\u0040x.com\"", 0);
  // Card-like numbers: 13 to 19 digits, single spaces or hyphens between digits.
  expect("\"4111 1111 1111 1111, 4111-1111-1111-1111 and 4111111111111\"",
         "\"[card], [card] and [card]\"", 3);
  expect("\"12345678901234567890 123456789012 12--34 1234  5678 9012 3456\"",
         "\"12345678901234567890 123456789012 12--34 1234  5678 9012 3456\"", 0);
  // Numbers outside strings are never touched.
  expect("{\"n\":4111111111111111}", "{\"n\":4111111111111111}", 0);
  // UTF-8 passes through; digits in an address belong to the address.
  expect("\"é 4111111111111111 ü x4111111111111111@y.io\"", "\"é [card] ü [email]\"", 2);

  invalid("not json", 8, "not valid JSON");
  invalid("{\"a\":1,}", 8, "not valid JSON");
  invalid("{\"a\":1} x", 9, "trailing");
  invalid("\"\xff\"", 3, "not valid UTF-8");
  invalid("", 0, "not valid JSON");
  char deep[2000];
  memset(deep, '[', sizeof deep);
  invalid(deep, sizeof deep, "nested too deeply");

  if (failures) {
    fprintf(stderr, "%d failed\n", failures);
    return 1;
  }
  printf("redact: all tests passed\n");
  return 0;
}
