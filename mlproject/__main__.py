"""Command line: ``python -m mlproject runs MODEL_DIR`` prints the runs table of a model_dir.

Exit status: 0 when the table was printed (also when it is empty), 2 for a usage error (an
unknown option or key, a ``--where`` without ``=``, a model_dir that is not a folder). Usage
errors and notices go to stderr through argparse, so ``main()`` raises ``SystemExit`` for them
as argparse does.

Example:
    python -m mlproject runs runs/                                   # every run, oldest first
    python -m mlproject runs runs/ --where status=completed --sort test_accuracy --reverse
    python -m mlproject runs runs/ --format csv > runs.csv
"""

from __future__ import annotations

import argparse
import os
import sys

from mlproject import runs

RUNS_HELP = """\
One row per run folder of MODEL_DIR: run name, status, steps, the config keys whose values
differ between the runs shown, the best validation value and its step, the test metrics, and
a problem column when a folder is damaged. Reads only run.json, file names and file sizes.

status: completed, interrupted, failed, running (from run.json); died (recorded as running,
but no process holds its lock: killed without a word); unknown (run.json older than the
field); damaged (no usable run.json; the problem column says why).

Keys (--where, --sort): a column (run, status, steps, best_loss, best_step, test_accuracy,
...) or a config key, dotted for nested dicts (lr, optim.lr; config.lr when a column has the
same name)."""

WHERE_HELP = """keep runs whose KEY equals VALUE; repeat to require several. VALUE matches text
equal to it, or a number, true, false or null equal to it read as JSON (lr=0.01 matches 0.01
and "0.01"; hidden=8 matches 8 and 8.0; true is not 1). With * ? or [ it is a shell pattern
on the value's text: run='*lr0.1*'. Runs lacking KEY never match."""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m mlproject`` parser, one subcommand per tool (only ``runs`` so far)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlproject", description="Tools for the runs mlproject leaves on disk."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    table = commands.add_parser(
        "runs",
        help="compare the runs of a model_dir: one row per run",
        description=RUNS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    table.set_defaults(parser=table)  # main() reports its usage errors through it
    table.add_argument("model_dir", metavar="MODEL_DIR", help="the folder holding the run folders")
    table.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help=WHERE_HELP)
    table.add_argument(
        "--sort",
        metavar="KEY",
        help="order by KEY, numbers before text, runs lacking it last (default: creation order)",
    )
    table.add_argument(
        "--reverse", action="store_true", help="descending order (runs lacking KEY stay last)"
    )
    table.add_argument(
        "--format", choices=runs.FORMATS, default="table", help="output format (default: table)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Example:
        >>> main(["runs", "runs/", "--format", "json"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    try:
        found = runs.read_runs(args.model_dir)
        # Sorting all the runs first checks the sort key against all of them, too.
        shown = runs.select(runs.sort_runs(found, args.sort, args.reverse), args.where)
    except (OSError, ValueError) as err:
        args.parser.error(str(err))  # argparse's usage error: the message on stderr, exit 2
    if not shown and args.format == "table":
        wheres = " ".join(f"--where {w}" for w in args.where)
        notice = (
            f"no run in {args.model_dir} matches {wheres}"
            if found
            else f"no runs in {args.model_dir}"
        )
        args.parser.exit(0, notice + "\n")  # to stderr, as argparse's own notices
    try:
        sys.stdout.write(runs.render(shown, args.format))
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
