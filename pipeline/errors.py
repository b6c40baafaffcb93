"""The project's exceptions.

Every error a user can cause is a `PipelineError` whose message names the bad value and says what to do.
The CLI prints that message (no traceback) and exits non-zero.
"""


class PipelineError(Exception):
    """A failure a user can act on. The message names the bad value and the remedy."""


class ConfigError(PipelineError):
    """A bad configuration file, key or value."""


class DataError(PipelineError):
    """Bad or missing input data (IDX files, TFDS data, example files)."""


class ValidationError(DataError):
    """Data validation found anomalies; `anomalies` lists them."""

    def __init__(self, message: str, anomalies: list[str] | None = None):
        super().__init__(message)
        self.anomalies = list(anomalies or [])


class ModelError(PipelineError):
    """A missing, corrupt or incompatible model."""
