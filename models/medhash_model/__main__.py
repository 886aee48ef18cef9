"""`python -m medhash_model <command>`: the command line of cli.py."""
from .cli import main

main()
