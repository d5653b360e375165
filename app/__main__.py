"""`python -m feldspar`: the same as the `feldspar` console script."""

from feldspar.cli import main

main()
