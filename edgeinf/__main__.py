"""``python -m edgeinf`` runs the CLI."""
from edgeinf.cli import entry

entry()
