"""The `gradscope` command line: thin click commands over the library."""
from __future__ import annotations

import click

from gradscope import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradscope")
def main() -> None:
    """gradscope: find what is wrong with a PyTorch training run, and explain it."""


if __name__ == "__main__":  # pragma: no cover
    main()
