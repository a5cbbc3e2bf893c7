"""Write the table of every method's options (from their declarations) into docs/options.md.

    python -m fusionlab options-table [--doc docs/options.md] [--check]
"""
from __future__ import annotations

import argparse
import sys

from fusionlab import ROOT
from fusionlab.docblocks import block_markers, replace_block
from pyfusion.fusion import METHODS, method_options
from pyfusion.options import table


def render() -> str:
    """The generated block: one row per method and option."""
    return table({m: method_options(m) for m in METHODS})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fusionlab options-table", description=__doc__.splitlines()[0])
    ap.add_argument("--doc", default=str(ROOT / "docs" / "options.md"), help="the markdown file (its options block)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the file's block differs from the declarations")
    args = ap.parse_args(argv)
    if args.check:
        start, end = block_markers("options")
        text = open(args.doc, encoding="utf-8").read()
        inside = text.split(start, 1)[-1].split(end, 1)[0].strip() if start in text else None
        if inside != render().strip():
            print(f"options-table: {args.doc} is stale: run `python -m fusionlab options-table`", file=sys.stderr)
            return 1
        return 0
    replace_block(args.doc, "options", render(), append=True)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
