//! The redaction rules, shared byte for byte with the C (`zig-transform`),
//! Python (`py-redact-transform`) and JavaScript (`js-redact-transform`)
//! versions; docs/plugins.md states them.
//!
//! - Only the *values* of JSON strings are rewritten: object keys, numbers and
//!   everything outside strings pass through unchanged, byte for byte. Escape
//!   sequences (`\n`, `\u0040`, ...) are copied as they are and split the text
//!   around them, so a match never spans one.
//! - E-mail: a maximal run of `[A-Za-z0-9._%+-]` followed by `@` and a domain:
//!   labels of `[A-Za-z0-9-]` joined by single dots, taken as far as they go.
//!   The whole match is replaced by the e-mail mask when the domain has at
//!   least two labels and the last is two or more ASCII letters; otherwise it
//!   is left as it is and scanning resumes after it.
//! - Card-like number: a maximal run of digits in which single spaces or
//!   hyphens may separate digits. It is replaced by the card mask when it
//!   holds 13 to 19 digits. E-mails are redacted first.
//!
//! Every class is ASCII, so working on UTF-8 bytes is the same as working on
//! characters: no byte of a multi-byte character is in any class.

/// The replacement texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masks {
    pub email: String,
    pub card: String,
}

impl Default for Masks {
    fn default() -> Masks {
        Masks {
            email: "[email]".to_string(),
            card: "[card]".to_string(),
        }
    }
}

fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Appends `s` to `out` with e-mails replaced; returns how many.
fn emails(s: &[u8], mask: &[u8], out: &mut Vec<u8>) -> usize {
    let (mut count, mut i, n) = (0, 0, s.len());
    while i < n {
        if !is_local(s[i]) {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let mut j = i;
        while j < n && is_local(s[j]) {
            j += 1;
        }
        if !(j + 1 < n && s[j] == b'@' && is_label(s[j + 1])) {
            out.extend_from_slice(&s[i..j]);
            i = j;
            continue;
        }
        // The domain: labels joined by single dots, as far as they go.
        let (mut k, mut labels) = (j + 1, 0);
        let mut last;
        loop {
            last = k;
            while k < n && is_label(s[k]) {
                k += 1;
            }
            labels += 1;
            if k + 1 < n && s[k] == b'.' && is_label(s[k + 1]) {
                k += 1;
                continue;
            }
            break;
        }
        let tld = &s[last..k];
        if labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
            out.extend_from_slice(mask);
            count += 1;
        } else {
            out.extend_from_slice(&s[i..k]);
        }
        i = k;
    }
    count
}

/// Appends `s` to `out` with card-like numbers replaced; returns how many.
fn cards(s: &[u8], mask: &[u8], out: &mut Vec<u8>) -> usize {
    let (mut count, mut i, n) = (0, 0, s.len());
    while i < n {
        if !s[i].is_ascii_digit() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (mut j, mut digits) = (i + 1, 1);
        while j < n {
            if s[j].is_ascii_digit() {
                j += 1;
                digits += 1;
            } else if matches!(s[j], b' ' | b'-') && j + 1 < n && s[j + 1].is_ascii_digit() {
                j += 2;
                digits += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits) {
            out.extend_from_slice(mask);
            count += 1;
        } else {
            out.extend_from_slice(&s[i..j]);
        }
        i = j;
    }
    count
}

/// Redacts one stretch of plain text (no JSON escapes), appending to `out`.
pub fn redact_text(s: &[u8], masks: &Masks, out: &mut Vec<u8>) -> usize {
    // Fast path: without '@' or a digit there is nothing to redact.
    if !s.iter().any(|&c| c == b'@' || c.is_ascii_digit()) {
        out.extend_from_slice(s);
        return 0;
    }
    let mut tmp = Vec::with_capacity(s.len());
    let a = emails(s, masks.email.as_bytes(), &mut tmp);
    a + cards(&tmp, masks.card.as_bytes(), out)
}

/// Validates `value` as UTF-8 JSON and returns it with its string values
/// redacted, and the number of replacements.
pub fn redact_json(value: &[u8], masks: &Masks) -> Result<(Vec<u8>, usize), String> {
    let text = std::str::from_utf8(value).map_err(|e| {
        format!(
            "record value is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        )
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("record value is not valid JSON: {e}"))?;

    // The text is valid JSON, so outside strings there are no quotes, and a
    // string followed (after blanks) by ':' is an object key.
    let s = value;
    let mut out = Vec::with_capacity(s.len());
    let (mut count, mut i) = (0, 0);
    while i < s.len() {
        let Some(q) = s[i..].iter().position(|&c| c == b'"').map(|p| i + p) else {
            out.extend_from_slice(&s[i..]);
            break;
        };
        out.extend_from_slice(&s[i..q]);
        let mut e = q + 1;
        while s[e] != b'"' {
            e += if s[e] == b'\\' { 2 } else { 1 };
        }
        let after = s[e + 1..]
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .map(|p| e + 1 + p);
        if after.is_some_and(|a| s[a] == b':') {
            out.extend_from_slice(&s[q..=e]);
        } else {
            out.push(b'"');
            let mut t = q + 1;
            while t < e {
                // Plain text up to the next escape, then the escape itself.
                let plain_end = s[t..e]
                    .iter()
                    .position(|&c| c == b'\\')
                    .map_or(e, |p| t + p);
                count += redact_text(&s[t..plain_end], masks, &mut out);
                t = plain_end;
                if t < e {
                    let len = if s[t + 1] == b'u' { 6 } else { 2 };
                    out.extend_from_slice(&s[t..t + len]);
                    t += len;
                }
            }
            out.push(b'"');
        }
        i = e + 1;
    }
    Ok((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The same cases as plugins/zig-transform/test_redact.c.
    fn expect(input: &str, want: &str, want_count: usize) {
        let (out, n) = redact_json(input.as_bytes(), &Masks::default()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "{input}");
        assert_eq!(n, want_count, "{input}");
    }

    #[test]
    fn redacts_string_values_only() {
        expect(
            r#"{ "a" : 1.50, "b": [true, null, "x"] }"#,
            r#"{ "a" : 1.50, "b": [true, null, "x"] }"#,
            0,
        );
        expect(
            r#"{"jo@x.com":"mail jo.doe+tag@mail.example.org now"}"#,
            r#"{"jo@x.com":"mail [email] now"}"#,
            1,
        );
        expect(
            r#"["a@b","a@b.c","a@b.c1","@x.com"]"#,
            r#"["a@b","a@b.c","a@b.c1","@x.com"]"#,
            0,
        );
        expect(r#""see a@b.com.\nb@c.de""#, r#""see [email].\n[email]""#, 2);
        expect(
            r#""\u0040x.com a\u0040x.com""#,
            r#""\u0040x.com a\u0040x.com""#,
            0,
        );
        expect(
            r#""4111 1111 1111 1111, 4111-1111-1111-1111 and 4111111111111""#,
            r#""[card], [card] and [card]""#,
            3,
        );
        let clean = r#""12345678901234567890 123456789012 12--34 1234  5678 9012 3456""#;
        expect(clean, clean, 0);
        expect(r#"{"n":4111111111111111}"#, r#"{"n":4111111111111111}"#, 0);
        expect(
            "\"é 4111111111111111 ü x4111111111111111@y.io\"",
            "\"é [card] ü [email]\"",
            2,
        );
    }

    #[test]
    fn custom_masks() {
        let m = Masks {
            email: "<e>".into(),
            card: "<c>".into(),
        };
        let (out, n) = redact_json(br#""a@b.io 4111111111111111""#, &m).unwrap();
        assert_eq!(out, br#""<e> <c>""#);
        assert_eq!(n, 2);
    }

    #[test]
    fn rejects_what_is_not_utf8_json() {
        for (input, why) in [
            (&b"not json"[..], "not valid JSON"),
            (b"{\"a\":1,}", "not valid JSON"),
            (b"{\"a\":1} x", "not valid JSON"),
            (b"\"\xff\"", "not valid UTF-8"),
            (b"", "not valid JSON"),
        ] {
            let e = redact_json(input, &Masks::default()).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
        }
    }
}
