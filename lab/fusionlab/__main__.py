"""``python -m fusionlab COMMAND [options]``: the lab's commands (each ``fusionlab.commands.NAME.main(argv)``)."""
from __future__ import annotations

import importlib
import pkgutil
import sys

from fusionlab import commands


def names() -> list[str]:
    """The commands, as typed (``tune-cnn-plus`` for the module ``tune_cnn_plus``)."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(commands.__path__))


def summary(name: str) -> str:
    """The first line of a command's docstring."""
    mod = importlib.import_module(f"fusionlab.commands.{name.replace('-', '_')}")
    return (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m fusionlab COMMAND [options]   (COMMAND --help for its options)\n\ncommands:")
        for name in names():
            print(f"  {name:<20} {summary(name)}")
        return 0
    name = argv[0]
    if name not in names():
        print(f"fusionlab: error: unknown command {name!r}; choose from {', '.join(names())}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"fusionlab.commands.{name.replace('-', '_')}")
    sys.argv[0] = f"fusionlab {name}"
    return mod.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
