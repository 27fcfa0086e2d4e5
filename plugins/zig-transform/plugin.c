// zig-transform: a weft `transform` stage written in C, compiled with Zig's
// C compiler (`zig cc`) to wasm32-wasi and adapted to a component.
//
// Redacts e-mail addresses and card-like numbers in the string values of JSON
// records (rules in redact.h) and sets the header `weft.redactions` to the
// number of replacements (0 for a clean record, whose value passes through
// byte for byte). Keys and the other headers pass through; tombstones pass
// through untouched; a value that is not UTF-8 JSON is an invalid-input error,
// so the record is dead-lettered.
//
// Configuration (optional): `email_mask` ("[email]") and `card_mask` ("[card]").
//
// Ownership, as wit-bindgen's C bindings define it: the exported function owns
// its arguments (it must free them, or move them into its result) and its
// result is freed by the generated post-return function, so everything
// returned is malloc'd and nothing is both returned and freed. Zero-length
// lists may carry a dummy pointer: never free or realloc one.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "transformer.h"

#define HEADER "weft.redactions"

typedef exports_weft_plugin_transform_record_t record_t;
typedef exports_weft_plugin_transform_result_list_record_plugin_error_t result_t;

static char *email_mask = "[email]";
static char *card_mask = "[card]";

static void log_msg(weft_plugin_log_level_t level, const char *msg) {
  transformer_string_t s = {(uint8_t *)msg, strlen(msg)};
  weft_plugin_log_log(level, &s);
}

static char *dup_str(const transformer_string_t *s) {
  char *c = malloc(s->len + 1);
  if (!c) abort();
  memcpy(c, s->ptr, s->len);
  c[s->len] = 0;
  return c;
}

static int str_is(const transformer_string_t *s, const char *c) {
  return s->len == strlen(c) && memcmp(s->ptr, c, s->len) == 0;
}

/// Reads the config once per instance (it cannot change).
static void configure(void) {
  static int done = 0;
  if (done) return;
  done = 1;
  transformer_list_tuple2_string_string_t entries;
  weft_plugin_config_entries(&entries);
  for (size_t i = 0; i < entries.len; i++) {
    transformer_string_t *k = &entries.ptr[i].f0, *v = &entries.ptr[i].f1;
    if (str_is(k, "email_mask")) {
      email_mask = dup_str(v);
    } else if (str_is(k, "card_mask")) {
      card_mask = dup_str(v);
    } else {
      char msg[200];
      snprintf(msg, sizeof msg, "unknown config key `%.*s` is ignored", (int)k->len, (char *)k->ptr);
      log_msg(WEFT_PLUGIN_LOG_LEVEL_WARN, msg);
    }
  }
  transformer_list_tuple2_string_string_free(&entries);
}

static void free_bytes(transformer_list_u8_t *l) {
  if (l->len > 0) free(l->ptr);
  l->ptr = NULL;
  l->len = 0;
}

/// Sets header HEADER to `value` in place, or appends it.
static void set_header(weft_plugin_types_list_header_t *headers, size_t value) {
  char num[24];
  int n = snprintf(num, sizeof num, "%zu", value);
  uint8_t *v = malloc(n);
  if (!v) abort();
  memcpy(v, num, n);
  for (size_t i = 0; i < headers->len; i++) {
    if (str_is(&headers->ptr[i].key, HEADER)) {
      free_bytes(&headers->ptr[i].value);
      headers->ptr[i].value = (transformer_list_u8_t){v, (size_t)n};
      return;
    }
  }
  size_t len = headers->len + 1;
  weft_plugin_types_header_t *h = headers->len > 0
                                      ? realloc(headers->ptr, len * sizeof *h)
                                      : malloc(len * sizeof *h);
  if (!h) abort();
  h[len - 1].key = (transformer_string_t){(uint8_t *)strdup(HEADER), strlen(HEADER)};
  h[len - 1].value = (transformer_list_u8_t){v, (size_t)n};
  headers->ptr = h;
  headers->len = len;
}

/// A one-record ok result, taking ownership of `r`.
static void ok_one(result_t *res, record_t *r) {
  record_t *out = malloc(sizeof *out);
  if (!out) abort();
  *out = *r;
  res->is_err = false;
  res->val.ok.ptr = out;
  res->val.ok.len = 1;
}

static void err(result_t *res, weft_plugin_types_error_kind_t kind, const char *msg) {
  res->is_err = true;
  res->val.err.kind = kind;
  transformer_string_dup(&res->val.err.message, msg);
}

void exports_weft_plugin_transform_transform(
    exports_weft_plugin_transform_list_record_t *records,
    exports_weft_plugin_transform_list_result_list_record_plugin_error_t *ret) {
  configure();
  redact_masks masks = {email_mask, card_mask};
  size_t n = records->len;
  ret->len = n;
  ret->ptr = n > 0 ? malloc(n * sizeof(result_t)) : NULL;
  if (n > 0 && !ret->ptr) abort();
  for (size_t i = 0; i < n; i++) {
    record_t *r = &records->ptr[i];
    result_t *res = &ret->ptr[i];
    if (!r->value.is_some) { // tombstone
      ok_one(res, r);
      continue;
    }
    rbuf out = {0};
    size_t count = 0;
    char why[160];
    redact_status st = redact_json(r->value.val.ptr, r->value.val.len, &masks, &out, &count,
                                   why, sizeof why);
    if (st != REDACT_OK) {
      free(out.ptr);
      err(res, st == REDACT_INVALID ? WEFT_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT
                                    : WEFT_PLUGIN_TYPES_ERROR_KIND_INTERNAL,
          st == REDACT_INVALID ? why : "out of memory");
      weft_plugin_types_record_free(r);
      continue;
    }
    if (count > 0) {
      free_bytes(&r->value.val);
      r->value.val = (transformer_list_u8_t){out.ptr, out.len};
    } else {
      free(out.ptr); // unchanged: keep the original bytes
    }
    set_header(&r->headers, count);
    ok_one(res, r);
  }
  if (n > 0) free(records->ptr);
}
