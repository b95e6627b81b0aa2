"""Tests for the JSON envelope and strict JSON of :mod:`toystore.envelope`."""

from twisted.trial.unittest import SynchronousTestCase

from toystore.envelope import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    StaleEpoch,
    dumps,
    error_body,
    loads,
    ok,
)


class JSONTests(SynchronousTestCase):
    """Encoding is deterministic; decoding refuses what is not strict JSON."""

    def test_dumps_is_compact_and_sorted(self) -> None:
        """The same object gives the same bytes whatever its key order."""
        self.assertEqual(dumps({"b": 1, "a": [1, "é"]}), '{"a":[1,"é"],"b":1}'.encode())
        self.assertEqual(dumps({"b": 1, "a": 2}), dumps({"a": 2, "b": 1}))

    def test_dumps_refuses_nan(self) -> None:
        """NaN is not JSON and is never sent."""
        self.assertRaises(ValueError, dumps, {"x": float("nan")})

    def test_loads_round_trip(self) -> None:
        """What dumps writes, loads reads back."""
        value = {"name": "Tux", "quantity": 2, "nested": {"list": [1.5, None, True]}}
        self.assertEqual(loads(dumps(value)), value)

    def test_loads_refusals(self) -> None:
        """Each kind of bad input is a BadRequest whose message says what is wrong."""
        cases = {
            b"{": "invalid JSON",
            b'{"q": NaN}': "NaN",
            b'{"q": Infinity}': "Infinity",
            b'{"a": 1, "a": 2}': "duplicate key 'a'",
            b'{"name": "\xff"}': "not valid UTF-8",
        }
        for raw, words in cases.items():
            with self.subTest(raw=raw):
                error = self.assertRaises(BadRequest, loads, raw)
                self.assertIn(words, error.message)
                self.assertEqual(error.code, 400)


class ErrorTests(SynchronousTestCase):
    """Errors travel as envelopes and come back as the same errors."""

    def test_envelopes(self) -> None:
        """Success and failure have the documented shapes."""
        self.assertEqual(ok({"x": 1}), {"data": {"x": 1}})
        self.assertEqual(error_body(404, "no"), {"error": {"code": 404, "message": "no"}})
        self.assertEqual(Conflict("out").to_json(), {"error": {"code": 409, "message": "out"}})

    def test_from_json_picks_the_class_of_the_code(self) -> None:
        """An error envelope is rebuilt as the subclass for its code."""
        for cls in (BadRequest, NotFound, Conflict, StaleEpoch):
            with self.subTest(cls=cls):
                error = ApiError.from_json(cls("why").to_json()["error"])
                self.assertIsInstance(error, cls)
                self.assertEqual(error, cls("why"))

    def test_from_json_unknown_code_and_garbage(self) -> None:
        """An unknown code stays a plain ApiError; a malformed one is a 502."""
        self.assertEqual(ApiError.from_json({"code": 418, "message": "teapot"}).code, 418)
        self.assertEqual(ApiError.from_json({"code": "x"}).code, 502)
        self.assertEqual(ApiError.from_json("nonsense").code, 502)
