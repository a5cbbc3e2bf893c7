#!/usr/bin/env python
"""Compute the survey's eight fusion metrics for fused images and compare with the published values.

    python tools/evaluate.py --sources DIR [--sources DIR ...] --fused DIR [--fused DIR ...]
                             [--method NAME ...] [--survey metrics.json | --no-survey] --out table.{md,csv,json}

Sources are NAME_1.ext / NAME_2.ext, fused images NAME_METHOD.ext, matched by NAME (see
fusionlab.tables). Prints the mean of every metric per method and, when all images are the survey's
(names present in metrics.json, found next to the sources or given with --survey), the survey's 18 published
rows averaged over the same images. The table is written atomically to --out (format from the extension).
Bad input prints one line ``evaluate: error: ...`` and exits with status 2.

Reference: Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: a survey of the state of
the art", Information Fusion 64 (2020) 71-91.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from fusionlab.tables import (EvaluationError, evaluate, find_cases, find_survey_file,  # noqa: E402
                                    load_survey, render, write_atomic)

PROG = "evaluate"
FORMATS = {".md": "md", ".csv": "csv", ".json": "json"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", action="append", required=True, type=Path, metavar="DIR",
                   help="directory of source pairs NAME_1.ext / NAME_2.ext (repeatable)")
    p.add_argument("--fused", action="append", required=True, type=Path, metavar="DIR",
                   help="directory of fused images NAME_METHOD.ext (repeatable)")
    p.add_argument("--method", action="append", metavar="NAME", help="evaluate only this method (repeatable)")
    p.add_argument("--survey", type=Path, metavar="FILE",
                   help="survey metrics.json (default: found next to the sources, up to three levels up)")
    p.add_argument("--no-survey", action="store_true", help="do not show the survey's published rows")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="output table: .md, .csv or .json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.out.suffix.lower() not in FORMATS:
        p.error(f"--out {args.out}: unknown extension {args.out.suffix!r} (use .md, .csv or .json)")
    if args.survey is not None and args.no_survey:
        p.error("--survey and --no-survey are exclusive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        parent = args.out.parent
        if str(parent) and not parent.is_dir():
            raise EvaluationError(f"--out {args.out}: directory {parent} does not exist")
        cases, unmatched = find_cases(args.sources, args.fused, args.method)
        if unmatched:
            print(f"{PROG}: note: ignored {len(unmatched)} fused-directory file(s) matching no source pair, "
                  f"e.g. {unmatched[0].name}", file=sys.stderr)
        survey = methods = None
        if not args.no_survey:
            path = args.survey or find_survey_file(args.sources)
            if args.survey is not None and not args.survey.is_file():
                raise EvaluationError(f"--survey {args.survey}: no such file")
            if path is not None:
                survey, methods = load_survey(path)
        results = evaluate(cases, progress=not args.no_progress)
        fmt = FORMATS[args.out.suffix.lower()]
        write_atomic(args.out, render(results, fmt, survey, methods))
        print(render(results, "md", survey, methods), end="")
        print(f"{PROG}: wrote {args.out}", file=sys.stderr)
    except EvaluationError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
