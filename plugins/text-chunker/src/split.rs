//! Boundary-aware splitting of text into overlapping chunks.
//!
//! The text is first cut into *atoms*: its words (maximal runs of
//! non-whitespace), and, only for a word longer than a whole chunk, pieces of
//! that word. Every gap between two atoms gets a *strength* saying how good a
//! place it is to cut: a paragraph break beats a sentence end, which beats a
//! line break, which beats a plain space, which beats a cut inside a word.
//! Chunks are then runs of atoms: each chunk is made as long as the size limit
//! allows, and then ends at the strongest gap in its second half, so chunks
//! follow the document's structure without becoming tiny. Working on atoms
//! keeps every cut on a UTF-8 character boundary by construction, and makes
//! every chunk start and end on non-whitespace.

use std::ops::Range;

/// How chunk size and overlap are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (Rust `char`s), the usual "characters".
    Chars,
    /// Whitespace-separated words, a cheap stand-in for model tokens.
    Tokens,
}

/// Size limits of a chunking run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// The unit of `max` and `overlap`.
    pub unit: Unit,
    /// The largest chunk, in `unit`s; at least 1.
    pub max: usize,
    /// How much of the end of a chunk is repeated at the start of the next one,
    /// in `unit`s; smaller than `max`. Overlap keeps a sentence that straddles
    /// a cut retrievable from either side.
    pub overlap: usize,
}

impl ChunkConfig {
    /// Limits measured in characters.
    pub fn chars(max: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig {
            unit: Unit::Chars,
            max,
            overlap,
        }
    }

    /// Limits measured in whitespace-separated words.
    pub fn tokens(max: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig {
            unit: Unit::Tokens,
            max,
            overlap,
        }
    }
}

/// Cut inside a word: only when a single word is longer than a chunk.
const CUT_CHAR: u8 = 0;
/// Cut at a space between two words.
const CUT_WORD: u8 = 1;
/// Cut at a single line break (lists, headings, hard-wrapped text).
const CUT_LINE: u8 = 2;
/// Cut after `.`, `!` or `?` (optionally closed by a quote or bracket) and whitespace.
const CUT_SENTENCE: u8 = 3;
/// Cut at a blank line (or a Unicode paragraph separator).
const CUT_PARAGRAPH: u8 = 4;

/// A word, or a piece of a word too long for one chunk.
#[derive(Debug, Clone, Copy)]
struct Atom {
    /// Byte range in the text.
    start: usize,
    end: usize,
    /// The same range in characters, so chunk sizes are O(1) to compute.
    start_char: usize,
    end_char: usize,
    /// Index of the word this atom belongs to (pieces of one word share it).
    word: usize,
    /// How good a cut the gap *before* this atom is (`CUT_*`).
    strength: u8,
}

/// Splits `text` into chunks of at most `cfg.max` units that overlap by up to
/// `cfg.overlap` units. Whitespace-only text gives no chunks.
///
/// Each chunk is a verbatim slice of `text` (see [`chunk_spans`]), so joining
/// the chunks while removing the overlaps gives back the text up to the
/// whitespace between chunks.
pub fn chunk_text(text: &str, cfg: &ChunkConfig) -> Vec<String> {
    chunk_spans(text, cfg)
        .into_iter()
        .map(|r| text[r].to_string())
        .collect()
}

/// Like [`chunk_text`], but returns the byte ranges of the chunks in `text`.
///
/// The ranges are in order, start and end on non-whitespace characters, lie
/// on UTF-8 character boundaries, and together cover every non-whitespace
/// character of the text; consecutive ranges may overlap.
pub fn chunk_spans(text: &str, cfg: &ChunkConfig) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    chunk_spans_into(text, cfg, &mut Scratch::default(), &mut spans);
    spans
}

/// Working memory of [`chunk_spans_into`], kept by a caller that splits many
/// texts so that each one does not allocate and grow its own buffers (in a
/// Wasm guest every allocation goes through the guest's allocator, which
/// costs several times a native one).
#[derive(Debug, Default)]
pub struct Scratch {
    atoms: Vec<Atom>,
    chars: Vec<(usize, char)>,
}

/// Like [`chunk_spans`], but reuses `scratch` and appends the ranges to
/// `spans` (cleared first). Same ranges as [`chunk_spans`].
pub fn chunk_spans_into(
    text: &str,
    cfg: &ChunkConfig,
    scratch: &mut Scratch,
    spans: &mut Vec<Range<usize>>,
) {
    // Defensive clamps: the config parser already rejects these, but a bad
    // value from a native caller must not loop forever or divide by zero.
    let max = cfg.max.max(1);
    let overlap = cfg.overlap.min(max - 1);
    spans.clear();
    atoms(text, cfg.unit, max, scratch);
    let atoms = &scratch.atoms;
    let sizer = Sizer {
        atoms,
        unit: cfg.unit,
    };
    let n = atoms.len();
    if n == 0 {
        return;
    }
    // Chunk `start..end` holds atoms [start, end). `done` atoms have been
    // emitted; a new chunk starts at or before `done` (the overlap) and must
    // take at least one atom past it, so the loop always advances.
    let mut start = 0;
    let mut done = 0;
    loop {
        let mut furthest = (done + 1).max(start + 1);
        while furthest < n && sizer.size(start, furthest + 1) <= max {
            furthest += 1;
        }
        let end = if furthest == n {
            n
        } else {
            best_end(&sizer, start, done, furthest, max)
        };
        spans.push(atoms[start].start..atoms[end - 1].end);
        if end == n {
            return;
        }
        let next = overlap_start(&sizer, start, end, overlap, max);
        done = end;
        start = next;
    }
}

/// Measures runs of atoms in the configured unit.
struct Sizer<'a> {
    atoms: &'a [Atom],
    unit: Unit,
}

impl Sizer<'_> {
    /// The size of the text spanned by atoms [a, b); `a < b`.
    fn size(&self, a: usize, b: usize) -> usize {
        let (first, last) = (&self.atoms[a], &self.atoms[b - 1]);
        match self.unit {
            Unit::Chars => last.end_char - first.start_char,
            Unit::Tokens => last.word - first.word + 1,
        }
    }

    fn strength(&self, i: usize) -> u8 {
        self.atoms[i].strength
    }
}

/// Picks where a chunk starting at atom `start` ends, given that it may end
/// anywhere in `(done, furthest]` (all of which fit). Prefers the strongest
/// cut among those that fill at least half a chunk, the later one on a tie;
/// with no such cut, takes as much as fits.
fn best_end(sizer: &Sizer<'_>, start: usize, done: usize, furthest: usize, max: usize) -> usize {
    let mut best: Option<(u8, usize)> = None;
    let mut end = furthest;
    while end > done && end > start && sizer.size(start, end) * 2 >= max {
        let s = sizer.strength(end);
        if best.is_none_or(|(bs, _)| s > bs) {
            best = Some((s, end));
        }
        end -= 1;
    }
    best.map_or(furthest, |(_, e)| e)
}

/// Picks where the chunk after `[start, end)` starts: a word start inside the
/// previous chunk whose tail is at most `overlap` long and still leaves room
/// for at least one new atom. Prefers the strongest cut among those giving at
/// least half the requested overlap (the longer overlap on a tie), then the
/// longest overlap that fits, and never starts inside a word. Returns `end`
/// for no overlap.
fn overlap_start(sizer: &Sizer<'_>, start: usize, end: usize, overlap: usize, max: usize) -> usize {
    if overlap == 0 {
        return end;
    }
    let mut best: Option<(u8, usize)> = None;
    let mut longest = end;
    let mut p = end - 1;
    while p > start && sizer.size(p, end) <= overlap {
        let s = sizer.strength(p);
        if s > CUT_CHAR && sizer.size(p, end + 1) <= max {
            longest = p;
            if sizer.size(p, end) * 2 >= overlap && best.is_none_or(|(bs, _)| s >= bs) {
                best = Some((s, p));
            }
        }
        p -= 1;
    }
    best.map_or(longest, |(_, p)| p)
}

/// Cuts `text` into atoms. In `Chars` mode a word longer than `max` characters
/// is cut into pieces of at most `max` characters, avoiding cuts inside a
/// grapheme cluster where it can; in `Tokens` mode a word is one token and
/// always fits.
/// The atoms go to `scratch.atoms` (cleared first).
#[inline(never)]
fn atoms(text: &str, unit: Unit, max: usize, scratch: &mut Scratch) {
    let Scratch { atoms, chars } = scratch;
    atoms.clear();
    let mut word = 0;
    let mut chars_before = 0;
    let mut prev_word: Option<(usize, usize)> = None; // byte range of the previous word

    // Bytes, not `char_indices`: ASCII (nearly all of most text) is tested
    // for whitespace without decoding; any other char is decoded at its
    // boundary and tested with `char::is_whitespace`, so the result is the
    // same as the per-char scan.
    let bytes = text.as_bytes();
    // The char at byte `p` (a char boundary): whether it is whitespace, and
    // its length in bytes.
    let at = |p: usize| -> (bool, usize) {
        let b = bytes[p];
        if b < 0x80 {
            (matches!(b, b' ' | b'\t'..=b'\r'), 1)
        } else {
            text[p..]
                .chars()
                .next()
                .map_or((false, 1), |c| (c.is_whitespace(), c.len_utf8()))
        }
    };
    // What the whitespace since the previous word holds, noted while it is
    // skipped (see `Gap`), instead of searching it again for each word.
    let mut gap = Gap::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let (ws, len) = at(pos);
        if ws {
            gap.note(&bytes[pos..pos + len]);
            pos += len;
            chars_before += 1;
            continue;
        }
        // Scan the word starting at `i`, counting its chars. Their offsets
        // are collected only for a word too long for one chunk (rare), not
        // pushed for every char of every word.
        let i = pos;
        let start_char = chars_before;
        let mut word_chars = 0;
        while pos < bytes.len() {
            // Printable ASCII, eight bytes at a time, up to the first other
            // byte: that is all of most words.
            if let Some(n) = printable_ascii(bytes, pos) {
                word_chars += n;
                pos += n;
                if n == 8 {
                    continue;
                }
            }
            if pos == bytes.len() {
                break;
            }
            let (ws, len) = at(pos);
            if ws {
                break;
            }
            word_chars += 1;
            pos += len;
        }
        chars_before += word_chars;
        let end = pos;
        let strength = match prev_word {
            None => CUT_PARAGRAPH,
            Some((ps, pe)) => gap.strength(&text[ps..pe]),
        };
        gap = Gap::default();
        if unit == Unit::Tokens || word_chars <= max {
            atoms.push(Atom {
                start: i,
                end,
                start_char,
                end_char: chars_before,
                word,
                strength,
            });
        } else {
            chars.clear();
            chars.extend(text[i..end].char_indices().map(|(j, d)| (i + j, d)));
            let mut from = 0;
            while from < chars.len() {
                let to = piece_end(chars, from, max);
                let piece_end_byte = chars.get(to).map_or(end, |&(j, _)| j);
                atoms.push(Atom {
                    start: chars[from].0,
                    end: piece_end_byte,
                    start_char: start_char + from,
                    end_char: start_char + to,
                    word,
                    strength: if from == 0 { strength } else { CUT_CHAR },
                });
                from = to;
            }
        }
        prev_word = Some((i, end));
        word += 1;
    }
}

/// How many of the eight bytes at `pos` are printable ASCII other than the
/// space (`!`..=`~`: one char each, none whitespace), counted from the first
/// up to the first other byte; `None` if fewer than eight bytes are left.
/// The bytes are tested together in one `u64` (the "has less / has more
/// than n" tricks of Bit Twiddling Hacks), not one branch per byte. Either
/// test may also flag bytes after a flagged one (borrows and carries travel
/// upwards), never before it, so the first flag is exact.
fn printable_ascii(bytes: &[u8], pos: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let eight: [u8; 8] = bytes.get(pos..pos + 8)?.try_into().ok()?;
    let x = u64::from_le_bytes(eight);
    // High bit set in each byte below b'!' (0x21)...
    let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
    // ...and in each byte above b'~' (0x7e): 0x7f and every non-ASCII byte.
    let above = (x.wrapping_add(ONES) | x) & HIGH;
    Some(((below | above).trailing_zeros() / 8) as usize)
}

/// The end (exclusive, as an index into `chars`) of a piece of an over-long
/// word starting at `from`: as far as `max` allows, moved back so as not to
/// separate a character from a following combining mark, variation selector
/// or zero-width joiner sequence, unless that leaves nothing.
fn piece_end(chars: &[(usize, char)], from: usize, max: usize) -> usize {
    let limit = (from + max).min(chars.len());
    if limit == chars.len() {
        return limit;
    }
    let mut to = limit;
    while to > from + 1 && !(safe_cut(chars[to - 1].1, chars[to].1)) {
        to -= 1;
    }
    if safe_cut(chars[to - 1].1, chars[to].1) {
        to
    } else {
        limit
    }
}

/// Whether cutting between `before` and `after` keeps grapheme clusters whole
/// (a cheap approximation of Unicode segmentation covering combining marks,
/// emoji modifiers and joiners, which is where naive cuts visibly break text).
fn safe_cut(before: char, after: char) -> bool {
    before != '\u{200D}' && !extends_cluster(after)
}

fn extends_cluster(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'   // combining diacritical marks
        | '\u{1AB0}'..='\u{1AFF}' // combining diacritical marks extended
        | '\u{1DC0}'..='\u{1DFF}' // combining diacritical marks supplement
        | '\u{20D0}'..='\u{20FF}' // combining marks for symbols
        | '\u{FE00}'..='\u{FE0F}' // variation selectors
        | '\u{FE20}'..='\u{FE2F}' // combining half marks
        | '\u{200D}'              // zero-width joiner
        | '\u{1F3FB}'..='\u{1F3FF}' // emoji skin-tone modifiers
        | '\u{E0020}'..='\u{E007F}' // emoji tag sequences
    )
}

/// What decides the strength of a cut at a run of whitespace: its line
/// breaks and Unicode line and paragraph separators.
#[derive(Debug, Default, Clone, Copy)]
struct Gap {
    newlines: u32,
    line_separator: bool,
    paragraph_separator: bool,
}

impl Gap {
    /// Takes note of one whitespace character, given as its UTF-8 bytes.
    fn note(&mut self, c: &[u8]) {
        match c {
            b"\n" => self.newlines += 1,
            b"\xe2\x80\xa8" => self.line_separator = true, // U+2028
            b"\xe2\x80\xa9" => self.paragraph_separator = true, // U+2029
            _ => {}
        }
    }

    /// How good a cut this gap after `prev` (the previous word) is: what
    /// [`gap_strength`] says of the gap's text.
    fn strength(&self, prev: &str) -> u8 {
        if self.newlines >= 2 || self.paragraph_separator {
            CUT_PARAGRAPH
        } else if ends_sentence(prev) {
            CUT_SENTENCE
        } else if self.newlines == 1 || self.line_separator {
            CUT_LINE
        } else {
            CUT_WORD
        }
    }
}

/// How good a cut the whitespace `gap` after `prev` (the previous word) is:
/// the definition [`Gap::strength`] is tested against.
#[cfg(test)]
fn gap_strength(prev: &str, gap: &str) -> u8 {
    let newlines = gap.chars().filter(|&c| c == '\n').count();
    if newlines >= 2 || gap.contains('\u{2029}') {
        CUT_PARAGRAPH
    } else if ends_sentence(prev) {
        CUT_SENTENCE
    } else if newlines == 1 || gap.contains('\u{2028}') {
        CUT_LINE
    } else {
        CUT_WORD
    }
}

/// Whether a word ends a sentence: `.`, `!`, `?` or `…`, possibly followed by
/// closing quotes or brackets (`He said "stop." Then ...`).
fn ends_sentence(word: &str) -> bool {
    // Most words end in a letter or digit, which neither ends a sentence
    // nor closes a quote: no need to look further.
    if word
        .as_bytes()
        .last()
        .is_some_and(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let core = word.trim_end_matches(['"', '\'', '”', '’', ')', ']', '»']);
    core.ends_with(['.', '!', '?', '…'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn char_len(s: &str) -> usize {
        s.chars().count()
    }

    /// Every non-whitespace byte of `text` lies in some span.
    fn assert_covers(text: &str, spans: &[Range<usize>]) {
        for (i, c) in text.char_indices() {
            if !c.is_whitespace() {
                assert!(
                    spans.iter().any(|r| r.contains(&i)),
                    "char {c:?} at {i} is in no chunk"
                );
            }
        }
    }

    fn assert_well_formed(text: &str, cfg: &ChunkConfig) -> Vec<String> {
        let spans = chunk_spans(text, cfg);
        for r in &spans {
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            assert!(r.start < r.end);
            let chunk = &text[r.clone()];
            assert_eq!(chunk, chunk.trim(), "chunk has outer whitespace");
            let size = match cfg.unit {
                Unit::Chars => char_len(chunk),
                Unit::Tokens => chunk.split_whitespace().count(),
            };
            assert!(size <= cfg.max, "chunk of {size} > {}: {chunk:?}", cfg.max);
        }
        for w in spans.windows(2) {
            assert!(w[0].start < w[1].start, "chunks do not advance");
            assert!(w[0].end < w[1].end, "a chunk adds no new text");
        }
        assert_covers(text, &spans);
        spans.into_iter().map(|r| text[r].to_string()).collect()
    }

    fn sentences(n: usize) -> String {
        (0..n)
            .map(|i| format!("Sentence number {i} talks about topic {} in detail.", i % 7))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn words_are_found_as_the_standard_library_finds_them() {
        // ASCII and Unicode whitespace (vertical tab, NEL, no-break space,
        // em space, ideographic space, line separator), multibyte words.
        let text = "a\u{0b}b\u{85}c\u{a0}d\u{2003}é\u{3000}日本\u{2028}x  y\t\n\nz 🙂";
        let mut scratch = Scratch::default();
        atoms(text, Unit::Tokens, 100, &mut scratch);
        let got: Vec<(usize, usize, usize, usize)> = scratch
            .atoms
            .iter()
            .map(|a| (a.start, a.end, a.start_char, a.end_char))
            .collect();
        let mut want = Vec::new();
        let mut words = text.split_whitespace();
        let mut next = words.next();
        for (n, (i, _)) in text.char_indices().enumerate() {
            let Some(w) = next else { break };
            let start = w.as_ptr() as usize - text.as_ptr() as usize;
            if i == start {
                let chars = w.chars().count();
                want.push((start, start + w.len(), n, n + chars));
                next = words.next();
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn printable_ascii_runs_end_at_the_first_other_byte() {
        // Every byte value at every position of an otherwise printable run,
        // after a printable prefix, so borrows and carries are exercised.
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut bytes = *b"abcdefgh";
                bytes[at] = b;
                let want = if (b'!'..=b'~').contains(&b) { 8 } else { at };
                assert_eq!(printable_ascii(&bytes, 0), Some(want), "{b:#x} at {at}");
            }
        }
        // A flagged byte before the run's other stops (0xff carries, 0x00
        // borrows into the next byte).
        assert_eq!(printable_ascii(b"ab\xff\x00 xyz", 0), Some(2));
        assert_eq!(printable_ascii(b"a\x00\xffzzzzz", 0), Some(1));
        assert_eq!(printable_ascii(b"short", 0), None);
        assert_eq!(printable_ascii(b"..abcdefgh", 2), Some(8));
    }

    #[test]
    fn cut_strengths_are_those_of_the_gaps_text() {
        // Every kind of gap after every kind of word end, each next to the
        // others: single and double line breaks (also as CR LF), Unicode
        // line and paragraph separators, other Unicode spaces.
        let words = [
            "end.",
            "word",
            "\"quoted?\"",
            "(aside…)",
            "a,",
            "日本。",
            "x",
        ];
        let gaps = [
            " ",
            "  ",
            "\n",
            "\r\n",
            "\n\n",
            "\r\n\r\n",
            " \n \n ",
            "\u{2028}",
            "\u{2029}",
            "\u{a0}",
            "\u{3000}\n",
            "\t\u{2028}\n",
        ];
        let mut text = String::new();
        for (n, w) in words.iter().cycle().take(60).enumerate() {
            text.push_str(w);
            text.push_str(gaps[n % gaps.len()]);
        }
        let mut scratch = Scratch::default();
        atoms(&text, Unit::Tokens, 100, &mut scratch);
        let atoms = &scratch.atoms;
        assert_eq!(atoms.len(), 60);
        let mut strengths = std::collections::BTreeSet::new();
        for w in atoms.windows(2) {
            let want = gap_strength(&text[w[0].start..w[0].end], &text[w[0].end..w[1].start]);
            assert_eq!(w[1].strength, want, "gap {:?}", &text[w[0].end..w[1].start]);
            strengths.insert(want);
        }
        assert_eq!(strengths.len(), 4, "every strength but a cut inside a word");
    }

    #[test]
    fn empty_and_blank_text_give_no_chunks() {
        let cfg = ChunkConfig::chars(800, 100);
        assert!(chunk_text("", &cfg).is_empty());
        assert!(chunk_text(" \n\t \n", &cfg).is_empty());
    }

    #[test]
    fn short_text_is_one_trimmed_chunk() {
        let cfg = ChunkConfig::chars(800, 100);
        assert_eq!(
            chunk_text("  Hello there.\n", &cfg),
            vec!["Hello there.".to_string()]
        );
    }

    #[test]
    fn paragraph_boundaries_are_preferred() {
        let p1 = sentences(6); // ~300 chars
        let p2 = sentences(6);
        let p3 = sentences(6);
        let text = format!("{p1}\n\n{p2}\n\n{p3}");
        let cfg = ChunkConfig::chars(800, 0);
        let chunks = assert_well_formed(&text, &cfg);
        assert_eq!(chunks.len(), 2, "{chunks:#?}");
        assert_eq!(chunks[0], format!("{p1}\n\n{p2}"));
        assert_eq!(chunks[1], p3);
    }

    #[test]
    fn sentence_boundaries_are_preferred_over_words() {
        let text = sentences(40);
        let cfg = ChunkConfig::chars(300, 0);
        let chunks = assert_well_formed(&text, &cfg);
        assert!(chunks.len() > 3);
        for c in &chunks {
            assert!(c.ends_with('.'), "chunk does not end a sentence: {c:?}");
            assert!(
                c.starts_with("Sentence"),
                "chunk does not start a sentence: {c:?}"
            );
        }
    }

    #[test]
    fn words_are_kept_whole_when_there_is_no_sentence_end() {
        let text = (0..500)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let cfg = ChunkConfig::chars(100, 20);
        for c in assert_well_formed(&text, &cfg) {
            for w in c.split_whitespace() {
                assert!(text.split_whitespace().any(|t| t == w), "broken word {w}");
            }
        }
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let text = sentences(40);
        let cfg = ChunkConfig::chars(400, 100);
        let spans = chunk_spans(&text, &cfg);
        assert_well_formed(&text, &cfg);
        assert!(spans.len() > 2);
        for w in spans.windows(2) {
            assert!(w[1].start < w[0].end, "no overlap between {w:?}");
            let shared = char_len(&text[w[1].start..w[0].end]);
            assert!(shared <= 100, "overlap of {shared} chars");
            assert!(shared >= 25, "overlap of only {shared} chars");
        }
    }

    #[test]
    fn overlap_prefers_a_sentence_start() {
        // Sentences of ~50 chars, overlap of 120: a sentence start is always
        // within reach, so every chunk after the first starts a sentence.
        let text = sentences(40);
        let cfg = ChunkConfig::chars(500, 120);
        let chunks = assert_well_formed(&text, &cfg);
        for c in &chunks[1..] {
            assert!(c.starts_with("Sentence"), "{c:?}");
        }
    }

    #[test]
    fn overlong_word_is_cut_as_a_last_resort() {
        let long = "x".repeat(250);
        let text = format!("Start here. {long} end.");
        let cfg = ChunkConfig::chars(100, 10);
        let chunks = assert_well_formed(&text, &cfg);
        assert!(chunks.iter().all(|c| char_len(c) <= 100));
        assert!(chunks
            .iter()
            .any(|c| c.chars().all(|ch| ch == 'x') && char_len(c) == 100));
    }

    #[test]
    fn multibyte_text_is_never_split_inside_a_character() {
        let cfg = ChunkConfig::chars(7, 2);
        for text in [
            "é".repeat(50),
            "😀".repeat(33),
            "Café déjà vu. Ça va? Über größer.\n\nПривет мир. こんにちは世界。".to_string(),
            "👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽 e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}".to_string(),
        ] {
            let chunks = assert_well_formed(&text, &cfg);
            assert!(!chunks.is_empty());
        }
    }

    #[test]
    fn combining_marks_and_modifiers_stay_attached() {
        // A thumbs-up with a skin tone is 2 chars; a 3-char limit must not
        // strand the modifier.
        let text = "👍🏽👍🏽👍🏽";
        let cfg = ChunkConfig::chars(3, 0);
        let chunks = assert_well_formed(text, &cfg);
        assert_eq!(chunks, vec!["👍🏽", "👍🏽", "👍🏽"]);
        let text = "e\u{301}e\u{301}e\u{301}";
        let chunks = assert_well_formed(text, &cfg);
        assert!(chunks.iter().all(|c| !c.starts_with('\u{301}')));
    }

    #[test]
    fn tokens_unit_counts_words() {
        let text = sentences(60);
        let cfg = ChunkConfig::tokens(50, 10);
        let spans = chunk_spans(&text, &cfg);
        let chunks = assert_well_formed(&text, &cfg);
        assert!(chunks.len() > 5);
        for w in spans.windows(2) {
            let shared = text[w[1].start..w[0].end].split_whitespace().count();
            assert!((1..=10).contains(&shared), "overlap of {shared} words");
        }
    }

    #[test]
    fn tokens_unit_never_splits_words() {
        let text = format!("short {} words", "y".repeat(5000));
        let cfg = ChunkConfig::tokens(2, 1);
        let chunks = assert_well_formed(&text, &cfg);
        assert!(chunks.iter().any(|c| c.contains(&"y".repeat(5000))));
    }

    #[test]
    fn degenerate_limits_still_terminate() {
        let text = sentences(5);
        for cfg in [
            ChunkConfig::chars(1, 0),
            ChunkConfig::chars(1, 5),
            ChunkConfig::chars(0, 0),
            ChunkConfig::tokens(1, 0),
            ChunkConfig::tokens(3, 2),
        ] {
            let spans = chunk_spans(&text, &cfg);
            assert!(!spans.is_empty());
            assert_covers(&text, &spans);
        }
    }

    #[test]
    fn chunking_is_deterministic() {
        let text = format!("{}\n\n{}", sentences(30), sentences(17));
        let cfg = ChunkConfig::chars(200, 50);
        assert_eq!(chunk_text(&text, &cfg), chunk_text(&text, &cfg));
    }

    /// Pseudo-random texts (a fixed LCG, so failures reproduce) mixing
    /// paragraphs, sentences, long words and multibyte characters, under many
    /// limits: every result must be well formed.
    #[test]
    fn random_texts_are_well_formed() {
        let vocab = [
            "a",
            "the",
            "bag",
            "costs",
            "é",
            "naïve",
            "😀",
            "👍🏽",
            "日本語",
            "e\u{301}",
            "x",
            "supercalifragilisticexpialidocious",
            "end.",
            "why?",
            "\"quoted.\"",
        ];
        let seps = [" ", " ", " ", " ", "\n", "\n\n", "  ", "\t", " \n \n "];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as usize) % m
        };
        for round in 0..200 {
            let words = next(300);
            let mut text = String::new();
            if round % 5 == 0 {
                text.push_str("  ");
            }
            for _ in 0..words {
                text.push_str(vocab[next(vocab.len())]);
                text.push_str(seps[next(seps.len())]);
            }
            let max = 1 + next(60);
            let overlap = next(max);
            assert_well_formed(&text, &ChunkConfig::chars(max, overlap));
            let max = 1 + next(20);
            let overlap = next(max);
            assert_well_formed(&text, &ChunkConfig::tokens(max, overlap));
        }
    }

    #[test]
    fn sentence_end_detection() {
        assert!(ends_sentence("end."));
        assert!(ends_sentence("really?!"));
        assert!(ends_sentence("\"stop.\""));
        assert!(ends_sentence("(see above.)"));
        assert!(!ends_sentence("word"));
        assert!(!ends_sentence("a,"));
    }
}
