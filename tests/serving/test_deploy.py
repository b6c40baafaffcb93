"""The deployment files in serving/deploy/ parse with TF Serving's protos and say what the README promises."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
import yaml
from google.protobuf import text_format

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "serving" / "deploy"


def parse(name: str, message):
    # text_format.Parse rejects unknown fields and wrong types, as the model server's parser does.
    return text_format.Parse((DEPLOY / name).read_text(), message)


def test_models_config_is_a_model_server_config():
    from tensorflow_serving.config import model_server_config_pb2

    config = parse("models.config", model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "mnist"
    assert model.base_path == "/models/mnist"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_batching_parameters_are_batching_parameters():
    from serving.tfs_protos import message_classes

    params = parse("batching_parameters.txt", message_classes()["BatchingParameters"]())
    assert params.max_batch_size.value == 256
    assert 0 <= params.batch_timeout_micros.value <= 10_000  # 0: a batch forms while the previous one runs
    assert params.num_batch_threads.value >= 1
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value  # TF Serving requires both


def test_monitoring_config_enables_prometheus():
    from serving.tfs_protos import message_classes

    config = parse("monitoring.config", message_classes()["MonitoringConfig"]())
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_a_misspelt_field_is_refused():
    from serving.tfs_protos import message_classes

    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 1 }", message_classes()["BatchingParameters"]())


def test_compose_runs_the_matching_tf_serving_with_the_config_files():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    tf_version = ".".join(metadata.version("tensorflow").split(".")[:2])
    assert tf_version == "2.21"
    assert service["image"] == f"tensorflow/serving:{tf_version}.0"
    published = {p.rsplit(":", 1)[-1]: p for p in service["ports"]}
    assert set(published) == {"8500", "8501"}
    assert all(p.endswith(f":{port}:{port}") for port, p in published.items())
    mounts = {m["target"]: m for m in service["volumes"]}
    assert "MODEL_BASE_PATH" in mounts["/models"]["source"] and mounts["/models"]["read_only"]
    assert mounts["/config"]["source"] == "."
    flags = dict(re.match(r"--([a-z_]+)=(.*)", f).groups() for f in service["command"])
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    for flag, name in [("model_config_file", "models.config"), ("batching_parameters_file", "batching_parameters.txt"),
                       ("monitoring_config_file", "monitoring.config")]:
        assert flags[flag] == f"/config/{name}" and (DEPLOY / name).is_file()
