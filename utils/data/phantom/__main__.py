"""`python -m utils.data.phantom --out DIR ...`: write a phantom by hand."""
from .build import main

main()
