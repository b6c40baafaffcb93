"""components.cifar and ingest of CIFAR-10: the binary archive read and checked, prepared through TFDS's own
Cifar10 builder (label names from batches.meta.txt, 32x32x3 images, the pixels of the archive)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from components import cifar, ingest
from components.params import DataConfig
from pipeline.errors import DataError
from tests.conftest import CIFAR_NAMES, cifar_records, synthetic_colour, write_cifar_archive


def test_reads_the_archive_its_folder_and_the_extracted_folder(tmp_path):
    archive = write_cifar_archive(tmp_path / "a" / "cifar-10-binary.tar.gz")
    extracted = write_cifar_archive(tmp_path / "x", extracted=True)
    for source in (archive, archive.parent, extracted, extracted / "cifar-10-batches-bin"):
        read = cifar.read_source(source)
        assert read.header_counts == {"train": 50, "test": 20}
        assert read.label_names == tuple(CIFAR_NAMES)
    images, labels = cifar.decode_batch(cifar.read_source(archive).files["test_batch.bin"])
    expected_images, expected_labels = synthetic_colour(20, seed=1)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert cifar.fingerprint(archive) == cifar.fingerprint(archive.parent)
    assert cifar.fingerprint(archive) != cifar.fingerprint(write_cifar_archive(tmp_path / "b.tar.gz", seed=5))


def _archive_with(tmp_path, **replace: bytes):
    """The tiny archive with some members replaced (None: left out)."""
    path = write_cifar_archive(tmp_path / "src" / "cifar-10-binary.tar.gz")
    members = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            members[m.name.rpartition("/")[2]] = tar.extractfile(m).read()
    members.update(replace)
    out = tmp_path / "bad" / "cifar-10-binary.tar.gz"
    out.parent.mkdir()
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            if data is None:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("replace, message", [
    ({"data_batch_3.bin": None}, "lacks cifar-10-batches-bin/data_batch_3.bin"),
    ({"test_batch.bin": b"\x01" * 3000}, "test_batch.bin holds 3000 bytes, not a whole number of 3073-byte records"),
    ({"data_batch_1.bin": cifar_records(*synthetic_colour(2))[:-1]}, "data_batch_1.bin .* the file is truncated"),
    ({"data_batch_2.bin": cifar_records(synthetic_colour(3)[0], np.array([1, 12, 3]))},
     r"data_batch_2.bin has 1 label\(s\) outside 0-9 \(first: 12 at record 1\)"),
    ({"batches.meta.txt": b"cat\ndog\n"}, "batches.meta.txt names 2 classes, expected 10"),
])
def test_a_bad_archive_is_refused_naming_the_file(tmp_path, replace, message):
    with pytest.raises(DataError, match=message):
        cifar.read_source(_archive_with(tmp_path, **replace))


def test_a_truncated_or_foreign_archive_is_refused(tmp_path):
    archive = write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated, corrupt or not a .tar.gz"):
        cifar.read_source(cut)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="is a file but not a .tar.gz"):
        ingest.check_config(DataConfig(dataset="cifar10", source_dir=str(text)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither cifar-10-binary.tar.gz nor the extracted"):
        cifar.read_source(tmp_path / "empty")


def test_swapped_batches_are_refused():
    with pytest.raises(DataError, match=r"train \(data_batch_1..5.bin\) holds 10 records and test .* 30"):
        cifar.check_split_sizes("cifar10", {"train": 10, "test": 30}, "c.tar.gz")


def test_ingest_prepares_cifar10_through_tfds_and_reuses_it(tmp_path, cifar_archive):
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "data"
    out = ingest.run(DataConfig(dataset="cifar10", source_dir=str(cifar_archive)), data_dir)
    assert (out.dataset, out.source, out.reused) == ("cifar10", "cifar10-binary", False)
    assert out.num_examples == {"train": 50, "test": 20} and out.header_counts == {"train": 50, "test": 20}
    assert out.class_names == tuple(CIFAR_NAMES)
    builder = tfds.builder("cifar10", data_dir=str(data_dir))
    assert builder.info.features["image"].shape == (32, 32, 3)
    test = list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))
    images, labels = synthetic_colour(20, seed=1)
    by_id = {t["id"].decode(): t for t in test}  # TFDS's own ids: test_00000 ...
    np.testing.assert_array_equal(by_id["test_00003"]["image"], images[3])
    assert by_id["test_00003"]["label"] == labels[3]
    assert not list(data_dir.glob(".ingest-*"))  # the temporary data_dir (extracted files included) is gone

    again = ingest.run(DataConfig(dataset="cifar10", source_dir=str(cifar_archive.parent)), data_dir)
    assert again.reused
