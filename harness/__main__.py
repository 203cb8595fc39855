"""``python -m harness``: the ``harness`` command; a checkout without its dependencies says so in one line."""

import sys

try:
    from harness.cli import main
except ModuleNotFoundError as exc:  # a source checkout run before `pip install -e .`
    sys.stderr.write(f"error: harness needs the package '{exc.name}', which is not installed; "
                     "run `pip install -e .` in the checkout (see the README's first command)\n")
    sys.exit(2)

main()
