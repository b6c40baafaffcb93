"""The scoring job's steps that work one element ahead on a background thread (`components/score/ahead.py`):
every output leaves, in input order, on its tagged output and in its element's window; a failure fails the job."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from components.score.ahead import AheadDoFn

pytestmark = pytest.mark.timeout(120)


class _Squares(AheadDoFn):
    """n -> n * n on the main output, and n on `odd` for odd n; 13 fails (and only 13)."""

    def work(self, n):
        if n == 13:
            raise ValueError("thirteen")
        return n, n * n

    def outputs(self, result):
        n, square = result
        yield square
        if n % 2:
            yield beam.pvalue.TaggedOutput("odd", n)


def test_work_done_ahead_keeps_every_output_its_order_and_window():
    with beam.Pipeline(runner=FnApiRunner()) as p:
        numbers = (p | beam.Create(list(range(12)))
                   | beam.Map(lambda n: window.TimestampedValue(n, n * 10))
                   | beam.WindowInto(window.FixedWindows(60)))
        out = numbers | beam.ParDo(_Squares()).with_outputs("odd", main="squares")
        assert_that(out.squares, equal_to([n * n for n in range(12)]), label="Squares")
        assert_that(out.odd, equal_to([1, 3, 5, 7, 9, 11]), label="Odd")
        # each output keeps its element's window: [0, 60) holds 0..5, [60, 120) holds 6..11
        windows = (out.odd | beam.WithKeys(0) | beam.GroupByKey()
                   | beam.MapTuple(lambda _, odd: sorted(odd)))
        assert_that(windows, equal_to([[1, 3, 5], [7, 9, 11]]), label="Windows")
        # in one bundle the outputs leave in input order
        ordered = (p | "One" >> beam.Create([list(range(13))]) | beam.FlatMap(lambda xs: xs)
                   | "Ahead" >> beam.ParDo(_Squares()).with_outputs("odd", main="squares"))
        assert_that(ordered.squares | beam.combiners.ToList(), equal_to([[n * n for n in range(13)]]),
                    label="Order")


def test_a_failure_in_work_done_ahead_fails_the_job():
    with pytest.raises(Exception, match="thirteen"):
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = p | beam.Create(list(range(20))) | beam.ParDo(_Squares()).with_outputs("odd", main="squares")
