"""The scoring job's graph: read -> RunInference -> write, with stable step labels.

    build_pipeline(p, inputs=check_inputs(pattern), output_dir=out, model=ref, output_format="jsonl")

Steps: ListFiles -> Spread -> the format's reader (ReadExamples | ReadParquet -> Slice | ReadCsv | BatchFiles) ->
Decode (`read.py`: batches of ([(key, label, input)], images)) -> RunInference (`beam_model.BatchHandler` over
the SavedModel's handler, or TF Serving's for a served model; every prediction stays beside its batch's
keys; a batch the model fails on goes to `failed` via `with_exception_handling`, with its gRPC status code
for a served model) -> FormatPredictions -> WritePredictions; WriteFailed; Summarize (summary.json,
`write.py`). Decode and FormatPredictions work one batch ahead on a helper thread (`ahead.py`), so decoding,
the model call and formatting overlap.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components.score.inputs import Inputs, check_inputs
from components.score.model import ModelRef, ServerRef
from components.score.read import read_inputs
from components.score.rows import CSV_COLUMNS, parquet_schema
from components.score.write import (
    FAILED_PREFIX,
    PREDICTIONS_PREFIX,
    STATS_TAG,
    SUMMARY_FILE,
    FormatPredictions,
    Summarize,
    summary_header,
)


def inference_failure(exc) -> str:
    """The reason of a batch the model failed on, with the gRPC status code for a served model. `exc` is what
    Beam's exception handling emits, (exception type, repr of the exception, traceback), or an exception."""
    from components.beam_model import RemoteInferenceError

    if isinstance(exc, tuple):
        kind, text = exc[0], str(exc[1])
    else:
        kind, text = type(exc), repr(exc)
    first = (text.strip().splitlines() or [""])[0][:300]
    if isinstance(kind, type) and issubclass(kind, RemoteInferenceError):
        code, _, message = first.partition(": ")
        return f"inference failed ({code}): {message}"
    return f"inference failed: {getattr(kind, '__name__', kind)}: {first}"


def _failed_rows(batch_exc):
    """(RunInference's batch: a list of ([(key, label, input)], images), exception) -> one failed row per key."""
    from components.score.progress import TALLY

    batch, exc = batch_exc
    reason = inference_failure(exc)
    rows = [{"key": meta[0], "reason": reason, "input": meta[2]} for metas, _ in batch for meta in metas]
    TALLY.add(failed=len(rows))
    return rows


def model_handler_for(model: ModelRef, server: ServerRef | None, *, min_batch_size: int, max_batch_size: int):
    from components.beam_model import SavedModelHandler, ServingModelHandler

    if server is not None:
        return ServingModelHandler(server, min_batch_size=min_batch_size, max_batch_size=max_batch_size)
    return SavedModelHandler(
        model.saved_model_dir, min_batch_size=min_batch_size, max_batch_size=max_batch_size,
        model_id=f"{model.name}/{model.version}" if model.version is not None else model.saved_model_dir,
    )


def build_pipeline(
    p: beam.Pipeline,
    *,
    output_dir: str,
    model: ModelRef,
    input_pattern: str | None = None,
    inputs: Inputs | None = None,
    output_format: str = "jsonl",
    min_batch_size: int = 1,
    max_batch_size: int = 256,
    model_handler=None,
    server: ServerRef | None = None,
) -> dict[str, beam.PCollection]:
    """Compose the scoring job on `p` over `inputs` (or `input_pattern`, checked here). `model_handler`
    (a per-image handler: uint8 images in, (probabilities, class) out) replaces the model's in tests.
    Returns the PCollections: predictions (results per batch), rows (chunks of formatted rows), failed, read,
    summary."""
    from apache_beam.ml.inference.base import RunInference

    from components.beam_model import BatchHandler

    inputs = inputs or check_inputs(input_pattern)
    handler = model_handler or model_handler_for(model, server, min_batch_size=min_batch_size,
                                                 max_batch_size=max_batch_size)
    images, decode_failed, read = read_inputs(p, inputs, min_batch_size=min_batch_size, max_batch_size=max_batch_size)
    predictions, errors = images | "RunInference" >> RunInference(BatchHandler(handler)).with_exception_handling()
    inference_failed = errors.failed_inferences | "InferenceFailures" >> beam.FlatMap(_failed_rows)
    failed = (decode_failed, inference_failed) | "AllFailed" >> beam.Flatten()
    formatted = predictions | "FormatPredictions" >> beam.ParDo(
        FormatPredictions(output_format, model.name, model.version, class_names=model.class_names)
    ).with_outputs(STATS_TAG, main="rows")
    prefix = FileSystems.join(output_dir, PREDICTIONS_PREFIX)
    if output_format == "parquet":
        formatted.rows | "WritePredictions" >> beam.io.WriteToParquetBatched(
            prefix, parquet_schema(), file_name_suffix=".parquet")
    else:
        header = ",".join(CSV_COLUMNS) if output_format == "csv" else None
        formatted.rows | "WritePredictions" >> beam.io.WriteToText(
            prefix, file_name_suffix=f".{output_format}", header=header)
    (
        failed
        | "FormatFailed" >> beam.Map(json.dumps)
        | "WriteFailed" >> beam.io.WriteToText(FileSystems.join(output_dir, FAILED_PREFIX), file_name_suffix=".jsonl")
    )
    header = summary_header(model, server, inputs, output_format, output_dir)
    summary = (formatted[STATS_TAG], failed, read) | "Summarize" >> Summarize(
        FileSystems.join(output_dir, SUMMARY_FILE), header)
    return {"predictions": predictions, "rows": formatted.rows, "failed": failed, "read": read, "summary": summary}
