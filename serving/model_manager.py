"""The local server's model manager: which versions of each model are loaded, polled and retired, as TF Serving's
AspiredVersionsManager does; one loaded version is a `serving.servable.Servable`.

    manager = ModelManager({"mnist": ModelSettings(base_path)}, poll_interval=1.0)
    manager.poll()              # load what the version policy wants (also done by the polling thread)
    servable = manager.resolve("mnist", version=None, label=None)   # the newest available version

A version is a folder `<base>/<model>/<integer>/` holding `saved_model.pb`, as `serving.model_registry`
lists them (the pusher renames complete folders into place, so a folder that is there is whole). Each poll:

1. lists the versions on disk and picks the aspired ones by the version policy (`latest` N, `all` or
   `specific`, from models.config; without one, TF Serving's default, the newest one);
2. loads each aspired version not loaded yet, replays its warmup file
   (`assets.extra/tf_serving_warmup_requests`, PredictionLogs), and only then publishes it, so the default
   version switches to a model that is already warm and no request waits on a load;
3. unloads loaded versions that are no longer aspired, after the new ones are published (TF Serving's
   availability-preserving policy). A version that fails to load is reported in GetModelStatus with its
   error and is not retried until one of its files changes (their names, sizes and mtimes: a copy in place into
   `variables/` leaves the version folder's own mtime alone); the versions already serving stay.

Requests read an immutable snapshot (`_ModelState`) swapped under a lock, so a request that started on a
version finishes on it even if that version is retired meanwhile. With a `batcher` (serving.batching), each
published version hands its requests to the shared batching queues; `on_load` hears of every load (metrics).

With `freeze_gc` (a server process: `serving.app.ServingApp`), each poll that changes the versions ends with a full
collection and `gc.freeze()`: what is loaded then (the models, TensorFlow, every module: some 370,000 objects) moves
out of the cyclic collector's reach, so the full collections that requests' garbage sets off now and then under
load never walk it. Walking it stops every thread for about 0.2 s on a 2-core VM (bench/serving.py prints it).
Each later change unfreezes first, so a retired version's reference cycles are collected, not kept.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import model_registry
from serving.errors import RequestError, echo

if TYPE_CHECKING:  # loading a version imports TensorFlow (5-8 s); reading a models config does not
    from serving.servable import Servable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """One served model: where its versions live, which to keep loaded, and its version labels."""

    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1  # for `latest`; TF Serving's default
    specific_versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)

    def aspired(self, on_disk: list[int]) -> list[int]:
        if self.policy == "all":
            return sorted(on_disk)
        if self.policy == "specific":
            return sorted(v for v in on_disk if v in self.specific_versions)
        return sorted(on_disk)[-self.num_versions:]


def read_models_config(path: str | os.PathLike, model_base_path: str | os.PathLike) -> dict[str, ModelSettings]:
    """Parse a TF Serving models.config (ModelServerConfig text proto) with TF Serving's own proto.

    A `base_path` that exists here is used as is; one that does not (the container's /models/<name>) maps to
    `<model_base_path>/<name>`, so the deployment's models.config serves the same models locally.
    """
    from serving.errors import ServingError
    from serving.tfs_protos import read_text_proto

    p = Path(path)
    config = read_text_proto(p, model_server_config_pb2.ModelServerConfig(), what="models config", flag="--models-config")
    if not config.HasField("model_config_list") or not config.model_config_list.config:
        raise ServingError(f"models config {str(p)!r} has no model_config_list entries; add one `config {{ name: ... }}`")
    models: dict[str, ModelSettings] = {}
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ServingError(f"models config {str(p)!r}: a config entry has no name")
        if entry.model_platform and entry.model_platform != "tensorflow":
            raise ServingError(f"models config {str(p)!r}: model {entry.name!r} has platform "
                               f"{entry.model_platform!r}; the local server serves only 'tensorflow'")
        base = Path(entry.base_path) if entry.base_path and Path(entry.base_path).is_dir() else Path(model_base_path) / entry.name
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        settings = ModelSettings(
            base_path=base,
            policy=kind,
            num_versions=(policy.latest.num_versions or 1) if kind == "latest" else 1,
            specific_versions=tuple(policy.specific.versions) if kind == "specific" else (),
            labels=dict(entry.version_labels),
        )
        log.info("models config %s: model %s from %s, policy %s, labels %s",
                 p, entry.name, base, kind if kind != "latest" else f"latest {settings.num_versions}", settings.labels)
        models[entry.name] = settings
    return models


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # LOADING, AVAILABLE, UNLOADING, END (TF Serving's ModelVersionStatus.State names)
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


@dataclass(frozen=True)
class _ModelState:
    settings: ModelSettings
    servables: Mapping[int, Servable] = field(default_factory=dict)
    statuses: Mapping[int, VersionStatus] = field(default_factory=dict)


class ModelManager:
    """The models a local server serves; `poll()` brings each to its aspired versions."""

    def __init__(self, models: Mapping[str, ModelSettings], *, poll_interval: float = 1.0,
                 models_config: str | os.PathLike | None = None, model_base_path: str | os.PathLike | None = None,
                 config_poll_interval: float | None = None, batcher=None, on_load=None, freeze_gc: bool = False):
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._states = {name: _ModelState(s) for name, s in models.items()}
        self._failed: dict[tuple[str, int], int] = {}  # (model, version) -> _fingerprint of the files that failed
        self._poll_interval = poll_interval
        self._models_config = Path(models_config) if models_config else None
        self._config_mtime = self._models_config.stat().st_mtime if self._models_config else None
        self._model_base_path = model_base_path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change = None  # called after each change of the available versions (health status)
        # TF Serving's --model_config_file_poll_wait_seconds: None re-reads the file (if changed) at every poll,
        # 0 never re-reads it.
        self._config_poll_interval = config_poll_interval
        self._config_checked = time.monotonic()
        self._batcher = batcher  # serving.batching.BatchScheduler, or None: each request runs alone
        self._on_load = on_load  # on_load(model_path, ok, load_seconds, warmup_seconds | None), for metrics
        self._freeze_gc = freeze_gc  # gc.freeze() after each change of the versions (see the module's docstring)

    @property
    def model_names(self) -> list[str]:
        return list(self._states)

    def any_available(self) -> bool:
        return any(state.servables for state in self._states.values())

    def resolve(self, name: str, *, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names: a version, a label, or the newest available version."""
        state = self._states.get(name)
        if state is None:
            what = f"Specific({echo(name)}, {version})" if version is not None else f"Latest({echo(name)})"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}"
                               + ("" if name else " (the request names no model)"))
        if label:
            if label not in state.settings.labels:
                # TF Serving answers an unknown label with INVALID_ARGUMENT (server_core.cc).
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {echo(label)}")
            version = state.settings.labels[label]
        if version is None:
            if not state.servables:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
            return state.servables[max(state.servables)]
        servable = state.servables.get(version)
        if servable is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        state = self._states.get(name)
        if state is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {echo(name)}")
        if version is not None:
            if version not in state.statuses:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [state.statuses[version]]
        if not state.statuses:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return [state.statuses[v] for v in sorted(state.statuses)]

    # -- loading ----------------------------------------------------------------------------------------

    def _set(self, name: str, **changes) -> None:
        with self._lock:
            self._states[name] = dataclasses.replace(self._states[name], **changes)

    def _status(self, name: str, status: VersionStatus) -> None:
        with self._lock:
            state = self._states[name]
            self._states[name] = dataclasses.replace(state, statuses={**state.statuses, status.version: status})

    def _reload_config(self) -> None:
        if self._models_config is None or self._config_poll_interval == 0:
            return
        if self._config_poll_interval is not None:
            if time.monotonic() - self._config_checked < self._config_poll_interval:
                return
            self._config_checked = time.monotonic()
        try:
            mtime = self._models_config.stat().st_mtime
        except OSError:
            return
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            models = read_models_config(self._models_config, self._model_base_path or ".")
        except Exception as exc:  # a bad edit keeps the old config, as TF Serving does
            log.error("models config %s changed but cannot be used, keeping the old one: %s", self._models_config, exc)
            return
        for name, settings in models.items():
            if name in self._states:
                self._set(name, settings=settings)
            else:
                with self._lock:
                    self._states[name] = _ModelState(settings)

    def poll(self) -> bool:
        """One pass over every model; True if the available versions changed."""
        with self._poll_lock:
            self._reload_config()
            changed = False
            for name in list(self._states):
                changed |= self._poll_model(name)
            if changed and self.on_change is not None:
                self.on_change()
            if changed and self._freeze_gc:
                gc.unfreeze()  # a retired version's objects, frozen with it, become collectable again
                gc.collect()
                gc.freeze()
            return changed

    def _poll_model(self, name: str) -> bool:
        settings = self._states[name].settings
        try:
            listed = model_registry.versions_in(settings.base_path)  # `<dir>/<integer>/`, as TF Serving lists them
        except OSError as exc:
            log.warning("cannot list %s: %s", settings.base_path, exc)
            listed = []
        on_disk = {v.version: v.path for v in listed if v.complete}
        usable = [v for v, p in on_disk.items()
                  if (name, v) not in self._failed or self._failed[(name, v)] != _fingerprint(p)]
        aspired = set(settings.aspired(usable))
        changed = False
        for version in sorted(aspired - set(self._states[name].servables)):
            changed |= self._load(name, version, on_disk[version])
        # Retire only once what is aspired is serving (availability preserving).
        for version in sorted(set(self._states[name].servables) - aspired):
            if not (aspired & set(self._states[name].servables)):
                break
            self._status(name, VersionStatus(version, "UNLOADING"))
            with self._lock:
                state = self._states[name]
                servables = {v: s for v, s in state.servables.items() if v != version}
                self._states[name] = dataclasses.replace(state, servables=servables)
            self._status(name, VersionStatus(version, "END"))
            log.info("model %s: version %d unloaded (version policy)", name, version)
            changed = True
        return changed

    def _load(self, name: str, version: int, path: Path) -> bool:
        self._status(name, VersionStatus(version, "LOADING"))
        started = time.perf_counter()
        warmup_started = None
        try:
            from serving.servable import Servable

            servable = Servable(name, version, path)
            warmup_started = time.perf_counter()
            warmed = servable.warm_up()
        except Exception as exc:  # any failure of a load is reported, never fatal to the server
            if self._on_load is not None:
                self._on_load(str(path), False, time.perf_counter() - started, None)
            self._failed[(name, version)] = _fingerprint(path)
            code = exc.code if isinstance(exc, RequestError) else grpc.StatusCode.UNKNOWN
            self._status(name, VersionStatus(version, "END", code, f"loading {path} failed: {exc}"))
            log.error("model %s: version %d from %s failed to load: %s", name, version, path, exc)
            return False
        if self._on_load is not None:
            self._on_load(str(path), True, warmup_started - started, time.perf_counter() - warmup_started)
        servable.batcher = self._batcher  # warmup ran alone; requests from now on share the batching queues
        with self._lock:
            state = self._states[name]
            self._states[name] = dataclasses.replace(
                state, servables={**state.servables, version: servable},
                statuses={**state.statuses, version: VersionStatus(version, "AVAILABLE")})
        log.info("model %s: version %d loaded from %s and warmed up with %d requests in %.1f s",
                 name, version, path, warmed, time.perf_counter() - started)
        return True

    # -- the polling thread -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._poll_interval == 0:  # TF Serving's --file_system_poll_wait_seconds=0: the base path is read once
            return
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll()
            except Exception:  # keep polling whatever one pass met
                log.exception("polling the model base path failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._freeze_gc:
            gc.unfreeze()  # the process's objects are the collector's again


MAX_FINGERPRINT_FILES = 10_000  # a SavedModel has a handful; the walk stops here whatever a folder holds


def _fingerprint(path: Path) -> int:
    """A hash of the names, sizes and mtimes of the files under a version folder (at most
    MAX_FINGERPRINT_FILES of them): what changes when a failed version is fixed, in place or not."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if len(entries) >= MAX_FINGERPRINT_FILES:
                return hash(tuple(entries))
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns))
    return hash(tuple(entries))
