"""Unit tests of `{{name}}`'s rules: `python3 -m unittest`."""

import unittest

import policy

CONFIG = {"header": "x-team", "replace": {"mock": "MOCK"}}


class PolicyTest(unittest.TestCase):
    def test_refuses_requests_without_the_header(self):
        self.assertIn("x-team", policy.refusal(CONFIG, None))
        self.assertIsNone(policy.refusal(CONFIG, "search"))

    def test_replaces_words_in_answers(self):
        self.assertEqual(policy.rewrite(CONFIG, " the Weir"), " the Weir")
        self.assertEqual(policy.rewrite(CONFIG, " mock upstream"), " MOCK upstream")

    def test_an_empty_header_name_is_refused(self):
        self.assertIsNotNone(policy.check({"header": ""}))
        self.assertIsNone(policy.check(CONFIG))


if __name__ == "__main__":
    unittest.main()
