"""``python -m pipelines.cli``: the ``deepwe`` command line."""

from pipelines.cli import main

main()
