"""The same cases as plugins/zig-transform/test_redact.c; `python3 -m unittest` here."""

import unittest

from redact import Redactor

CASES = [
    (rb'{ "a" : 1.50, "b": [true, null, "x"] }', rb'{ "a" : 1.50, "b": [true, null, "x"] }', 0),
    (rb'{"jo@x.com":"mail jo.doe+tag@mail.example.org now"}', rb'{"jo@x.com":"mail [email] now"}', 1),
    (rb'["a@b","a@b.c","a@b.c1","@x.com"]', rb'["a@b","a@b.c","a@b.c1","@x.com"]', 0),
    (rb'"see a@b.com.\nb@c.de"', rb'"see [email].\n[email]"', 2),
    (rb'"\u0040x.com a\u0040x.com"', rb'"\u0040x.com a\u0040x.com"', 0),
    (rb'"4111 1111 1111 1111, 4111-1111-1111-1111 and 4111111111111"', rb'"[card], [card] and [card]"', 3),
    (
        rb'"12345678901234567890 123456789012 12--34 1234  5678 9012 3456"',
        rb'"12345678901234567890 123456789012 12--34 1234  5678 9012 3456"',
        0,
    ),
    (rb'{"n":4111111111111111}', rb'{"n":4111111111111111}', 0),
    ('"é 4111111111111111 ü x4111111111111111@y.io"'.encode(), '"é [card] ü [email]"'.encode(), 2),
]


class Redact(unittest.TestCase):
    def test_cases(self):
        r = Redactor()
        for given, want, n in CASES:
            self.assertEqual(r.json(given), (want, n), given)

    def test_masks(self):
        self.assertEqual(Redactor("<e>", "<c>").json(b'"a@b.io 4111111111111111"'), (b'"<e> <c>"', 2))

    def test_invalid(self):
        for given, why in [
            (b"not json", "not valid JSON"),
            (b'{"a":1,}', "not valid JSON"),
            (b'{"a":1} x', "not valid JSON"),
            (b'"\xff"', "not valid UTF-8"),
            (b"", "not valid JSON"),
            (b"NaN", "not valid JSON"),
        ]:
            with self.assertRaisesRegex(ValueError, why):
                Redactor().json(given)


if __name__ == "__main__":
    unittest.main()
