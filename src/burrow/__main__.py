"""``python -m burrow`` runs the CLI."""

from burrow.cli import main

main()
