"""``python -m geopix`` runs the CLI."""

from geopix.cli import run

run()
