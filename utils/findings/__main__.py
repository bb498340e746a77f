"""`python -m utils.findings [--check]`."""
from .details import main

main()
