"""`python -m cediag ...`: the same command line as the `cediag` script."""

from .cli import main

if __name__ == "__main__":
    main()
