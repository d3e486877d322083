"""``python -m hyperplane``: the same as the ``hyperplane`` command."""
from hyperplane.cli import main

if __name__ == "__main__":
    main()
