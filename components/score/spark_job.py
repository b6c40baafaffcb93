"""The scoring job on Spark (`mnist-pipeline score --engine spark [--spark-master URL]`): the same inputs,
checks, rows, failed output and summary.json as the Beam job, for Spark platforms (Databricks, EMR,
Dataproc, a standalone cluster) where Beam's Spark runner would fetch a job-server jar from Maven.

    summary = run_job(ref, inputs, output_dir, output_format="jsonl", batch_size=256, master="local[*]")

The checked inputs are cut into units (`readers.split_units`: row ranges of a file, a few per core), one
Spark task each; a task reads its unit with the format's reader shared with Beam (`readers.py`), predicts
each batch of `batch_size` rows with the SavedModel loaded once per Python worker (`spark_worker.py`) and
returns Arrow batches of output rows (mapInArrow). Spark's writers commit each task's output once, so a
task rerun after a lost executor neither loses nor duplicates a row; the part files are then renamed to
the Beam job's names (predictions-SSSSS-of-NNNNN.<format>, failed-SSSSS-of-NNNNN.jsonl; CSV parts get the
header line). Counts for summary.json come from the same persisted result, aggregated by Spark.

pyspark is imported only here and in `spark_udf.py` (the [spark] extra); Java 17 must be installed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time

from apache_beam.io.filesystems import FileSystems

from components.score.inputs import Inputs
from components.score.progress import Progress
from components.score.readers import split_units
from components.score.rows import CSV_COLUMNS, add_counts, new_stats, summary_figures
from components.score.spark_worker import FAILED, PREDICTION, READ, ScoreTask, output_schema
from pipeline.errors import ConfigError, PipelineError
from serving import signatures as sig

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
JAVA_PACKAGE = "openjdk-17-jre-headless"
UNITS_PER_CORE = 4  # tasks per core: small enough to spread a single file, large enough to amortise a task


def require_spark() -> None:
    """pyspark importable and a Java runtime on PATH (or JAVA_HOME), else one line naming what to install."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError('the Spark engine needs pyspark: pip install "mnist-pipeline[spark]"') from None
    java_home = os.environ.get("JAVA_HOME")
    if not (shutil.which("java") or (java_home and os.path.exists(os.path.join(java_home, "bin", "java")))):
        raise PipelineError(f"the Spark engine needs Java 17 and finds no `java` on PATH (nor JAVA_HOME); install "
                            f"it (Debian/Ubuntu: apt-get install {JAVA_PACKAGE})")


def _code_root() -> str:
    """The folder holding the `components` package, for the executors' PYTHONPATH."""
    import components

    return os.path.dirname(os.path.dirname(os.path.abspath(components.__file__)))


def session(master: str | None = None, batch_size: int = 256, conf: dict | None = None):
    """A SparkSession on `master` (default local[*]) whose Python workers run this interpreter with this
    code importable, Arrow batches of `batch_size` rows, and Spark's console progress bar off (ours is on)."""
    require_spark()
    from pyspark.sql import SparkSession

    # The Python of the executors' workers (pyspark reads it from the environment, before the config).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    builder = (SparkSession.builder.master(master or DEFAULT_MASTER).appName("mnist-pipeline score")
               .config("spark.pyspark.python", sys.executable)
               .config("spark.pyspark.driver.python", sys.executable)
               .config("spark.executorEnv.PYTHONPATH", _code_root())
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.ui.enabled", "false"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start, or the master did not answer
        raise PipelineError(f"Spark did not start on master {master or DEFAULT_MASTER!r}: "
                            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}"
                            ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _parallelism(spark) -> int:
    return max(1, int(spark.sparkContext.defaultParallelism))


def _rename_parts(tmp: str, output_dir: str, prefix: str, suffix: str, header: str | None = None) -> list[str]:
    """Spark's part files in `tmp` -> <output_dir>/<prefix>-SSSSS-of-NNNNN<suffix> (CSV: the header line first)."""
    parts = sorted(m.path for m in FileSystems.match([FileSystems.join(tmp, "part-*")])[0].metadata_list)
    names = []
    for i, part in enumerate(parts):
        name = FileSystems.join(output_dir, f"{prefix}-{i:05d}-of-{len(parts):05d}{suffix}")
        if header is None:
            FileSystems.rename([part], [name])
        else:
            with FileSystems.open(part, compression_type="uncompressed") as src, \
                    FileSystems.create(name, compression_type="uncompressed") as dst:
                dst.write(header.encode() + b"\n")
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        names.append(name)
    return names


def run_job(spark, *, model, inputs: Inputs, output_dir: str, output_format: str, batch_size: int,
            header: dict) -> dict:
    """Score `inputs` with `model` (a ModelRef of a local SavedModel) on `spark` into `output_dir`; returns
    summary.json's content (written by the caller after its accounting)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    total = sum(inputs.expected.values())
    units = split_units(inputs, max(batch_size, -(-total // (_parallelism(spark) * UNITS_PER_CORE))))
    log.info("spark: %d rows in %d tasks on %s", total, len(units), spark.sparkContext.master)
    schema = T.StructType([T.StructField("source", T.StringType()), T.StructField("path", T.StringType()),
                           T.StructField("start", T.LongType()), T.StructField("stop", T.LongType())])
    rdd = spark.sparkContext.parallelize([(u.source, u.path, u.start, u.stop) for u in units], len(units))
    counters = tuple(spark.sparkContext.accumulator(0) for _ in range(3))  # read, predicted, failed: progress only
    task = ScoreTask(inputs, model.saved_model_dir, (output_format, model.name, model.version, model.class_names),
                     batch_size, counters)
    from pyspark.sql.pandas.types import from_arrow_schema

    result = (spark.createDataFrame(rdd, schema).mapInArrow(task, from_arrow_schema(output_schema()))
              .persist(StorageLevel.MEMORY_AND_DISK))
    tmp = FileSystems.join(output_dir, f"_spark-{secrets.token_hex(4)}")
    progress = Progress(total, lambda: tuple(min(c.value, total) for c in counters))
    try:
        progress.start()
        predictions = result.where(F.col("kind") == PREDICTION)
        if output_format == "parquet":
            (predictions.select("key", "predicted_class", "predicted_class_name", "probabilities", "label",
                                "model_name", "model_version").write.parquet(FileSystems.join(tmp, "predictions")))
        else:
            predictions.select("line").write.text(FileSystems.join(tmp, "predictions"))
        result.where(F.col("kind") == FAILED).select("line").write.text(FileSystems.join(tmp, "failed"))
        counts = result.groupBy("kind", "input").agg(F.sum("n").alias("n")).collect()
        labeled = F.col("label").isNotNull() & (F.col("label") >= 0) & (F.col("label") < sig.NUM_CLASSES)
        confusion = predictions.where(labeled).groupBy("label", "predicted_class").count().collect()
        reasons = result.where(F.col("kind") == FAILED).groupBy("reason").count().collect()
        _rename_parts(FileSystems.join(tmp, "predictions"), output_dir, "predictions", f".{output_format}",
                      header=",".join(CSV_COLUMNS) if output_format == "csv" else None)
        _rename_parts(FileSystems.join(tmp, "failed"), output_dir, "failed", ".jsonl")
    finally:
        progress.stop()
        result.unpersist()
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
    read, failed, predicted = {}, {}, {}
    for row in counts:
        by_kind = read if row["kind"] == READ else failed if row["kind"] == FAILED else predicted
        by_kind[row["input"]] = int(row["n"])
    stats = new_stats()
    add_counts(stats, predicted, ((int(r["label"]), int(r["predicted_class"]), int(r["count"])) for r in confusion))
    figures = summary_figures(stats, {row["reason"]: int(row["count"]) for row in reasons}, failed, read)
    return {**header, **figures}


def run(*, model, inputs: Inputs, output_dir: str, output_format: str, batch_size: int, master: str | None,
        header: dict) -> tuple[dict, float]:
    """A session, the job, the session stopped; (summary, seconds of the job)."""
    spark = session(master, batch_size)
    start = time.perf_counter()
    try:
        summary = run_job(spark, model=model, inputs=inputs, output_dir=output_dir, output_format=output_format,
                          batch_size=batch_size, header={**header, "engine": "spark",
                                                         "spark_master": spark.sparkContext.master})
    finally:
        spark.stop()
    return summary, time.perf_counter() - start
