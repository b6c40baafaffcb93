"""Validate stage, like TFX's StatisticsGen + ExampleValidator: statistics of a prepared dataset, then anomalies.

    out = run(config.data, paths.data_dir(workdir), paths.statistics_path(workdir, config.data.dataset))

Per split it reads every example as stored (the features on disk, not the code's idea of them) and records
the count, the label histogram, the pixel min/max/mean/std, the image shape and dtype. The expected schema
is MNIST's: uint8 images of 28x28x1 and 10 classes, and per split exactly as many examples as the IDX header
announced (from the ingest record) and as TFDS's metadata says. Anything else is an anomaly. The statistics,
with the anomalies found, are written atomically to `statistics_path`; anomalies then raise a
`ValidationError` that lists them, so the run stops.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import atomic_write_json
from components.params import DataConfig
from components.portable import portable
from pipeline.errors import DataError, ValidationError
from serving.signatures import IMAGE_SIZE, NUM_CLASSES

log = logging.getLogger(__name__)

EXPECTED_SHAPE = [IMAGE_SIZE, IMAGE_SIZE, 1]
EXPECTED_DTYPE = "uint8"
_BATCH = 10000


@dataclass(frozen=True)
class ValidateOutput:
    dataset: str
    statistics_path: Path
    statistics: dict[str, Any]  # per split: num_examples, label_histogram, pixel_*, image_shape, image_dtype
    anomalies: tuple[str, ...]  # empty: valid (run() raises otherwise)


def run(config: DataConfig, data_dir: str | os.PathLike, statistics_path: str | os.PathLike, *,
        record_root: str | os.PathLike | None = None) -> ValidateOutput:
    """Compute statistics of every split of the prepared `config.dataset`, write them, stop on anomalies.

    `record_root`: the statistics name the dataset folder relative to it when inside it (None: absolute)."""
    import tensorflow_datasets as tfds

    dataset = config.dataset
    data_dir = Path(data_dir)
    statistics_path = Path(statistics_path)
    from components.data import prepared_builder

    registered = prepared_builder(data_dir, dataset, "train")
    # Read what is on disk, with the features recorded there: that is what validation must check.
    builder = tfds.builder_from_directory(registered.data_dir)
    label_feature = builder.info.features["label"]
    num_classes = getattr(label_feature, "num_classes", NUM_CLASSES)

    from components.ingest import record_path as ingest_record_path

    record_path = ingest_record_path(data_dir, dataset)
    header_counts = _header_counts(record_path)

    per_split: dict[str, dict[str, Any]] = {}
    anomalies: list[str] = []
    for split, split_info in builder.info.splits.items():
        batches = tfds.as_numpy(builder.as_dataset(split=split, batch_size=_BATCH, shuffle_files=False))
        stats = split_statistics(((b["image"], b["label"]) for b in batches), num_classes)
        per_split[split] = stats
        anomalies += split_anomalies(
            split, stats, num_classes=num_classes, metadata_count=split_info.num_examples,
            header_count=None if header_counts is None else header_counts.get(split),
        )
    if header_counts:
        for split in sorted(set(header_counts) - set(per_split)):
            anomalies.append(f"{split}: the IDX header announces {header_counts[split]} examples but the split is missing")

    statistics = {
        "dataset": dataset,
        "version": str(builder.info.version),
        "dataset_dir": portable(registered.data_dir, record_root),
        "computed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "schema": {"image_shape": EXPECTED_SHAPE, "image_dtype": EXPECTED_DTYPE, "num_classes": num_classes},
        "header_counts": header_counts,
        "splits": per_split,
        "anomalies": anomalies,
    }
    _write_json(statistics_path, statistics)
    if anomalies:
        raise ValidationError(
            f"data validation of {dataset!r} found {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}: "
            + "; ".join(anomalies) + f" (statistics in {statistics_path})",
            anomalies,
        )
    log.info("validated %s: %s", dataset, ", ".join(f"{s} {v['num_examples']}" for s, v in per_split.items()))
    return ValidateOutput(dataset=dataset, statistics_path=statistics_path, statistics=statistics, anomalies=())


def split_statistics(batches: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict[str, Any]:
    """Statistics of one split from (images, labels) numpy batches, in one pass (float64 sums)."""
    count = 0
    histogram = np.zeros(num_classes, dtype=np.int64)
    out_of_range = 0
    pixel_min, pixel_max = None, None
    total = total_sq = 0.0
    pixels = 0
    shapes: set[tuple[int, ...]] = set()
    dtypes: set[str] = set()
    for images, labels in batches:
        images = np.asarray(images)
        labels = np.asarray(labels).astype(np.int64)
        count += len(labels)
        shapes.add(tuple(int(d) for d in images.shape[1:]))
        dtypes.add(str(images.dtype))
        valid = (labels >= 0) & (labels < num_classes)
        out_of_range += int(np.count_nonzero(~valid))
        histogram += np.bincount(labels[valid], minlength=num_classes)[:num_classes]
        if images.size:
            lo, hi = images.min().item(), images.max().item()
            pixel_min = lo if pixel_min is None else min(pixel_min, lo)
            pixel_max = hi if pixel_max is None else max(pixel_max, hi)
            as_float = images.astype(np.float64)
            total += float(as_float.sum())
            total_sq += float(np.square(as_float).sum())
            pixels += images.size
    mean = total / pixels if pixels else None
    std = float(np.sqrt(max(total_sq / pixels - mean * mean, 0.0))) if pixels else None
    return {
        "num_examples": count,
        "label_histogram": [int(c) for c in histogram],
        "labels_out_of_range": out_of_range,
        "pixel_min": pixel_min,
        "pixel_max": pixel_max,
        "pixel_mean": mean,
        "pixel_std": std,
        "image_shape": [list(s) for s in sorted(shapes)][0] if len(shapes) == 1 else [list(s) for s in sorted(shapes)],
        "image_dtype": sorted(dtypes)[0] if len(dtypes) == 1 else sorted(dtypes),
    }


def split_anomalies(
    split: str,
    stats: dict[str, Any],
    *,
    num_classes: int = NUM_CLASSES,
    metadata_count: int | None = None,
    header_count: int | None = None,
) -> list[str]:
    """What in one split's statistics breaks the schema; each entry names the split, the field and the values."""
    found = []
    n = stats["num_examples"]
    if n == 0:
        found.append(f"{split}: no examples")
    if header_count is not None and n != header_count:
        found.append(f"{split}: {n} examples but the IDX header announces {header_count}")
    if metadata_count is not None and n != metadata_count:
        found.append(f"{split}: {n} examples but TFDS's metadata says {metadata_count}")
    missing = [c for c, k in enumerate(stats["label_histogram"]) if k == 0]
    if n and missing:
        found.append(f"{split}: class(es) {', '.join(map(str, missing))} missing (no examples)")
    if stats.get("labels_out_of_range"):
        found.append(f"{split}: {stats['labels_out_of_range']} label(s) outside 0-{num_classes - 1}")
    if n and stats["image_shape"] != EXPECTED_SHAPE:
        found.append(f"{split}: image shape {stats['image_shape']}, expected {EXPECTED_SHAPE}")
    if n and stats["image_dtype"] != EXPECTED_DTYPE:
        found.append(f"{split}: image dtype {stats['image_dtype']}, expected {EXPECTED_DTYPE}")
    return found


def _header_counts(record_path: Path) -> dict[str, int] | None:
    """The IDX header counts ingest recorded; None for a TFDS download (TFDS checks its own files)."""
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"ingest record {str(record_path)!r} cannot be read ({exc}); run `mnist-pipeline ingest` again") from exc
    counts = record.get("header_counts")
    return {str(k): int(v) for k, v in counts.items()} if counts else None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_json(path, payload)
    log.info("wrote statistics %s", path)
