"""TF Serving deployment files, the gRPC and REST clients and the local development server (gRPC, REST, batching, metrics)."""

# The largest gRPC message the client sends or receives and the local server accepts (both directions):
# gRPC's own default of 4 MiB holds only about 1,300 float32 28x28 images in one Predict request.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# The most examples one request may carry on the local server. TF Serving caps a request only through its
# batching file (max_batch_size 256 in deploy/batching_parameters.txt); the local server caps it with or
# without batching so that one request cannot ask for unbounded work. 1024 float32 28x28 images are 3.2 MB,
# well under DEFAULT_MAX_MESSAGE_BYTES; the client sends at most 256 per request by default.
DEFAULT_MAX_BATCH_SIZE = 1024
