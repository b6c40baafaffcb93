"""A DoFn that does its work one element ahead, on a background thread, so that a batch's TensorFlow graph
calls (which release the interpreter lock) overlap the steps after it on the other core.

    class Decode(AheadDoFn):
        def work(self, element):        # on the background thread: no Beam calls (counters, outputs) here
            return list(decoder.decode(element))
        def outputs(self, result):      # on the bundle's thread, in input order: counters, outputs
            yield from result

The scoring job's steps run one after another on one thread in FnApiRunner (every step of a batch, then the
next batch), where a tf.data pipeline decodes the next batch while the model predicts this one. Here the
work on element i+1 runs while the steps after this one handle element i. Outputs leave in input order, each
with its input element's timestamp and window; the last ones at the end of the bundle. An exception raised by
`work` fails the bundle when its element's outputs are due, as it would have inline.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam


class AheadDoFn(beam.DoFn):
    AHEAD = 1  # elements worked on ahead of the one whose outputs leave

    def setup(self):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"score-{type(self).__name__}")

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        self._pending.append((self._pool.submit(self.work, element), timestamp, window))
        if len(self._pending) > self.AHEAD:
            yield from self._release(*self._pending.popleft())

    def finish_bundle(self):
        while self._pending:
            yield from self._release(*self._pending.popleft())

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _release(self, future, timestamp, window):
        from apache_beam.utils.windowed_value import WindowedValue

        for out in self.outputs(future.result()):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, (window,)))
            else:
                yield WindowedValue(out, timestamp, (window,))

    def work(self, element):
        """The element's result, computed on the background thread."""
        raise NotImplementedError

    def outputs(self, result):
        """The outputs of one element's result, on the bundle's thread (counters and Beam calls go here)."""
        raise NotImplementedError
