"""mnist-pipeline: the CLI, configuration, workdir layout and run records."""
