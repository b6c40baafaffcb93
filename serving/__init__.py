"""TF Serving deployment files, the gRPC client and the local development server."""

# The largest gRPC message the client sends or receives and the local server accepts (both directions):
# gRPC's own default of 4 MiB holds only about 1,300 float32 28x28 images in one Predict request.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
