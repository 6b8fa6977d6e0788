"""``python -m pipelines.cli``: the ``deepwe`` command line."""

from pipelines.cli.commands import main

main()
