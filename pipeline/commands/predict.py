"""`mnist-pipeline predict`: ask a TF Serving (or `mnist-pipeline serve`) server for classes over gRPC or REST."""

from __future__ import annotations

import argparse
import logging
import struct
from pathlib import Path

from pipeline.cli import config_flag
from pipeline.config import Config

NAME = "predict"
HELP = "classify PNG files, or measure accuracy and latency on the test set, through a gRPC or REST server"
DESCRIPTION = """\
Send PNG images to the server's classify signature (TF Serving's Classify API, which answers the model's class
names) and print the class of each, its name beside the index. The images must be of the model's shape, which
the server's metadata gives (serving_default's input): 28x28 grey for MNIST, 32x32 colour for CIFAR-10; a file
of another size, or grey for a colour model or the reverse, is refused with its reason (exit 1), the others
are classified:

  mnist-pipeline predict --server localhost:8500 a.png b.png                            # a.png: 7 (p=0.998)
  mnist-pipeline predict --server localhost:8500 --model-name fashion_mnist coat.png    # coat.png: 4 Coat (p=0.675)
  mnist-pipeline predict --rest http://localhost:8501 a.png b.png     # TF Serving's REST API
  mnist-pipeline predict --model-name cifar10 ship.png                 # ship.png: 8 ship (p=0.912)

Or send N test images (from the workdir's TFDS data) from K concurrent clients, and report the accuracy
(of the answers received) and the RPC error rate separately, with latency p50/p95/p99 and throughput:

  mnist-pipeline predict --server localhost:8500 --test-set 10000 --concurrency 8"""

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="PNG", help="PNG files of the model's image shape")
    parser.add_argument("--server", default="localhost:8500", metavar="HOST:PORT", help="gRPC address (default localhost:8500)")
    parser.add_argument("--rest", metavar="URL", help="use TF Serving's REST API at this URL (http://localhost:8501; "
                        "https:// with --tls-ca) instead of gRPC at --server")
    config_flag(parser, "--dataset", key="data.dataset", metavar="NAME",
                help="mnist (default), fashion_mnist or cifar10: the default model name, and the test set of "
                     "--test-set")
    parser.add_argument("--model-name", default=None, metavar="NAME",
                        help="model name (default: push.model_name, the dataset's: mnist, fashion_mnist, cifar10)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, metavar="N", help="ask this model version (default: the newest)")
    which.add_argument("--label", metavar="LABEL", help="ask the version with this label (models.config), e.g. stable")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="deadline of each call (default 10)")
    parser.add_argument("--status", action="store_true", help="print the model's versions (GetModelStatus) and signatures")
    parser.add_argument("--test-set", type=int, metavar="N", help="send the first N test images instead of files")
    parser.add_argument("--concurrency", type=int, default=1, metavar="K", help="concurrent requests for --test-set (default 1)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="B", help="images per request for --test-set (default 1)")
    parser.add_argument("--tls-ca", metavar="PEM", help="CA certificate: use TLS and trust this CA")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS; with --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="client private key (mutual TLS)")
    parser.add_argument("--tls-server-name", metavar="NAME", help="expected server name in its certificate, if not the host")


# PNG colour types (the IHDR byte after the bit depth): grey and grey+alpha are grey; RGB, palette and RGBA colour.
_PNG_GREY_TYPES = (0, 4)


def read_png_file(path: str | Path) -> bytes:
    """The bytes of a PNG file; a DataError naming the file when it cannot be read or is no PNG."""
    from pipeline.errors import DataError

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"image {str(p)!r} cannot be read: {exc}") from exc
    if not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR" or len(data) < 26:
        raise DataError(f"image {str(p)!r} is not a PNG file; pass PNG images")
    return data


def check_png(path: str | Path, data: bytes, shape=None) -> bytes:
    """`data` when the PNG is of `shape` (height, width, channels; default MNIST's 28x28x1): a DataError naming
    the file, its size or its grey/colour kind, and what the model takes otherwise (from the PNG header)."""
    from pipeline.errors import DataError
    from serving.signatures import DEFAULT_IMAGE_SHAPE, describe_image

    height, width, channels = shape or DEFAULT_IMAGE_SHAPE
    found_width, found_height = struct.unpack(">II", data[16:24])
    found_channels = 1 if data[25] in _PNG_GREY_TYPES else 3
    if (found_height, found_width, found_channels) != (height, width, channels):
        kind = "grey" if found_channels == 1 else "colour"
        note = " (grey and colour images are not converted)" if found_channels != channels else ""
        raise DataError(f"image {str(path)!r} is {found_width}x{found_height} pixels, {kind}; the model takes "
                        f"{describe_image((height, width, channels))} images{note}")
    return data


def read_png(path: str | Path, shape=None) -> bytes:
    """The bytes of a PNG file of `shape` (default 28x28 grey); a DataError naming the file otherwise."""
    return check_png(path, read_png_file(path), shape)


def _client(config: Config, args: argparse.Namespace):
    from serving.client import ServingClient

    if args.rest:
        from serving.rest_client import RestClient

        return RestClient(
            args.rest, model_name=args.model_name or config.push.model_name, timeout=args.timeout,
            root_certificates=args.tls_ca, certificate_chain=args.tls_cert, private_key=args.tls_key,
            tls_server_name=args.tls_server_name,
        )
    return ServingClient(
        args.server, model_name=args.model_name or config.push.model_name, timeout=args.timeout,
        root_certificates=args.tls_ca, certificate_chain=args.tls_cert, private_key=args.tls_key,
        tls_server_name=args.tls_server_name,
    )


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline.errors import PipelineError

    if args.status:
        return _print_status(config, args)
    if args.test_set is None and not args.images:
        raise PipelineError("give PNG files to classify, --test-set N, or --status")
    if args.test_set is not None and args.images:
        raise PipelineError("give PNG files or --test-set N, not both")
    if args.test_set is not None:
        return _run_test_set(config, args)
    from components.examples import make_example
    from pipeline.errors import DataError

    files = [read_png_file(p) for p in args.images]  # every file read before anything is sent
    with _client(config, args) as client:
        from serving.signatures import image_shape_of

        # The served model's shape, from its serving_default input in TF Serving's GetModelMetadata answer.
        shape = image_shape_of(client.get_model_metadata(version=args.version, version_label=args.label).signature_defs)
        checked, refused = {}, {}
        for path, data in zip(args.images, files):
            try:
                checked[path] = check_png(path, data, shape)
            except DataError as exc:  # a file of the wrong shape or kind is refused alone
                refused[path] = str(exc)
        out = client.classify([make_example(png) for png in checked.values()], version=args.version,
                              version_label=args.label) if checked else None
    answers = dict(zip(checked, zip(out["classes"], out["scores"]))) if out is not None else {}
    for path in args.images:
        if path in refused:
            print(f"{path}: refused: {refused[path]}")
            continue
        names, scores = answers[path]
        index = int(scores.argmax())
        print(f"{path}: {class_label(index, str(names[index]))} (p={float(scores[index]):.3f})")
    version = getattr(out, "model_version", None)  # gRPC's answer names it; REST's does not
    answered = f"version {version}" if version is not None else "(REST answers name no version)"
    print(f"model {client.model_name} {answered if out is not None else '(no image sent)'} at {client.address}")
    return 1 if refused else 0


def class_label(index: int, name: str) -> str:
    """"7" where the name is the index itself (MNIST), else both: "4 Coat"."""
    return str(index) if name == str(index) else f"{index} {name}"


def _print_status(config: Config, args: argparse.Namespace) -> int:
    with _client(config, args) as client:
        statuses = client.get_model_status()
        meta = client.get_model_metadata(version=args.version, version_label=args.label)
    print(f"model {client.model_name} at {client.address}:")
    for s in statuses:
        error = f" ({s.error_message})" if s.error_code else ""
        print(f"  version {s.version}: {s.state}{error}")
    print(f"  signatures of version {meta.model_version}:")
    for name, sd in sorted(meta.signature_defs.items()):
        if name.startswith("__"):
            continue
        ins = ", ".join(f"{k} {_dtype(v.dtype)}{[d.size for d in v.tensor_shape.dim]}" for k, v in sorted(sd.inputs.items()))
        outs = ", ".join(f"{k} {_dtype(v.dtype)}{[d.size for d in v.tensor_shape.dim]}" for k, v in sorted(sd.outputs.items()))
        print(f"    {name} ({sd.method_name}): {ins} -> {outs}")
    return 0


def _dtype(enum: int) -> str:
    import tensorflow as tf

    return tf.as_dtype(enum).name


def _run_test_set(config: Config, args: argparse.Namespace) -> int:
    import time
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import numpy as np
    from tqdm import tqdm

    from components.data import load_split
    from components.preprocessing import scale_images
    from pipeline import paths
    from pipeline.errors import PipelineError
    from serving.errors import ServingError

    if args.test_set < 1 or args.concurrency < 1 or args.batch_size < 1:
        raise PipelineError("--test-set, --concurrency and --batch-size must be positive integers")
    ds = load_split(paths.data_dir(config.workdir), config.data.dataset, "test").take(args.test_set)
    ds = ds.batch(4096).map(lambda x, y: (scale_images(x), y))
    batches = list(ds.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    if len(images) < args.test_set:
        log.warning("the test split has only %d images", len(images))
    starts = range(0, len(images), args.batch_size)

    with _client(config, args) as client:
        client.wait_until_available(timeout=args.timeout)

        def one(start: int):
            stop = start + args.batch_size
            t0 = time.perf_counter()
            try:
                out = client.predict(images[start:stop], version=args.version, version_label=args.label)
            except ServingError as exc:
                return start, None, time.perf_counter() - t0, exc
            return start, out["classes"], time.perf_counter() - t0, None

        correct = answered = failed_requests = 0
        latencies: list[float] = []
        first_error: ServingError | None = None
        t_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool, \
                tqdm(total=len(images), unit="img", desc="predict") as bar:
            futures = [pool.submit(one, s) for s in starts]
            for fut in as_completed(futures):
                start, classes, latency, error = fut.result()
                n = min(args.batch_size, len(images) - start)
                latencies.append(latency)
                if error is not None:
                    failed_requests += 1
                    first_error = first_error or error
                else:
                    answered += n
                    correct += int(np.sum(classes == labels[start:start + n]))
                bar.update(n)
        elapsed = time.perf_counter() - t_start

    lat_ms = np.array(latencies) * 1000
    requests = len(latencies)
    print(f"server {client.address}, model {client.model_name}: {len(images)} test images in {requests} requests "
          f"of {args.batch_size}, {args.concurrency} concurrent")
    accuracy = f"{correct / answered:.4f} ({correct}/{answered} answered images)" if answered else "n/a (no answers)"
    print(f"  accuracy:       {accuracy}")
    print(f"  RPC error rate: {failed_requests / requests:.4f} ({failed_requests}/{requests} requests failed)")
    print(f"  latency ms:     p50 {np.percentile(lat_ms, 50):.2f}  p95 {np.percentile(lat_ms, 95):.2f}  "
          f"p99 {np.percentile(lat_ms, 99):.2f}")
    print(f"  throughput:     {len(images) / elapsed:.0f} images/s, {requests / elapsed:.0f} requests/s")
    if first_error is not None:
        print(f"  first error:    {first_error}")
        return 1
    return 0
