"""Command-line tools. Each module has `main(argv=None) -> int` and is also a console script."""
