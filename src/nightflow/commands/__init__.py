"""One module per ``nightflow`` subcommand: each defines ``add_arguments(parser)`` and ``run(args) -> int``."""
