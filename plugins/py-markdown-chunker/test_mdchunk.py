"""Unit tests of the chunking logic, run natively: `python3 -m unittest` here.
(The component as a whole is tested through weft in tests/polyglot.rs.)"""

import unittest

from mdchunk import chunk_markdown, parse_max_chars, check_doc_id, sections

DOC = """Intro line before any heading.

# Baggage

General rules.

## Checked bags

One bag of 23 kg.

Extra bags cost 60 EUR.

## Cabin bags
One cabin bag of 8 kg.

Pets
----

Small pets fly in the cabin.

```
# not a heading
```
"""


class Sections(unittest.TestCase):
    def test_heading_paths(self):
        paths = [" > ".join(s.path) for s in sections(DOC)]
        self.assertEqual(paths, ["", "Baggage", "Baggage > Checked bags", "Baggage > Cabin bags", "Baggage > Pets"])

    def test_code_fence_is_not_a_heading(self):
        chunks = chunk_markdown(DOC, 800)
        self.assertEqual(chunks[-1].section, "Baggage > Pets")
        self.assertIn("# not a heading", chunks[-1].text)

    def test_heading_without_body_is_skipped(self):
        chunks = chunk_markdown("# A\n## B\ntext\n", 800)
        self.assertEqual([(c.section, c.text) for c in chunks], [("A > B", "## B\ntext")])


class Chunking(unittest.TestCase):
    def test_small_sections_are_one_chunk_each(self):
        chunks = chunk_markdown(DOC, 800)
        self.assertEqual([c.seq for c in chunks], list(range(len(chunks))))
        self.assertEqual(chunks[2].text, "## Checked bags\n\nOne bag of 23 kg.\n\nExtra bags cost 60 EUR.")
        self.assertEqual(chunks[2].section, "Baggage > Checked bags")

    def test_chunks_are_slices_within_the_limit(self):
        long = "# Title\n\n" + " ".join(f"Sentence number {i} is here." for i in range(200)) + "\n\n" + "x" * 500
        for max_chars in (40, 100, 333, 800):
            chunks = chunk_markdown(long, max_chars)
            for c in chunks:
                self.assertLessEqual(len(c.text), max_chars)
                self.assertEqual(long[c.span[0] : c.span[1]], c.text)
                self.assertEqual(c.text, c.text.strip())
            # Nothing is lost: every non-space character is in some chunk.
            self.assertEqual(
                sum(len("".join(c.text.split())) for c in chunks), len("".join(long.split()))
            )

    def test_heading_shares_a_chunk_with_a_long_paragraph(self):
        text = "## Rules\n\n" + "Word " * 100
        chunks = chunk_markdown(text, 120)
        self.assertTrue(chunks[0].text.startswith("## Rules\n\nWord"))

    def test_paragraphs_are_cut_at_sentences(self):
        text = "A first sentence here. A second sentence here. A third one."
        self.assertEqual(
            [c.text for c in chunk_markdown(text, 50)],
            ["A first sentence here. A second sentence here.", "A third one."],
        )

    def test_empty(self):
        self.assertEqual(chunk_markdown("", 100), [])
        self.assertEqual(chunk_markdown("# Only a heading\n", 100), [])


class Config(unittest.TestCase):
    def test_max_chars(self):
        self.assertEqual(parse_max_chars(None), 800)
        self.assertEqual(parse_max_chars("300"), 300)
        self.assertEqual(parse_max_chars('"300"'), 300)
        for bad in ("0", "-5", "lots", "1.5"):
            with self.assertRaises(ValueError):
                parse_max_chars(bad)

    def test_doc_ids(self):
        check_doc_id("a-doc")
        for bad in ("", "a#b"):
            with self.assertRaises(ValueError):
                check_doc_id(bad)


if __name__ == "__main__":
    unittest.main()
