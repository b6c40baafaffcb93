"""One module per subcommand: NAME, HELP, add_arguments(parser), run(config, args) -> exit status.

These modules are imported for `--help`: they must not import TensorFlow, Beam or gRPC at module level.
"""
