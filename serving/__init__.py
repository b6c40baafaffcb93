"""TF Serving deployment files, the gRPC client and the local development server."""
