"""``python -m burrow.cli`` runs the CLI."""

from burrow.cli import main

main()
