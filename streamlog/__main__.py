"""``python -m streamlog``: the same command line as the ``streamlog`` script."""

from streamlog.cli import main

if __name__ == "__main__":
    main()
