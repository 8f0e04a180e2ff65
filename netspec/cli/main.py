"""The ``netspec`` command line: one parser, shared options, one error format.

Exit codes: 0 ok, 1 user error (a diagnostic was printed), 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..diagnostics import NetspecError, render_all, to_json

# name -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("netspec.cli.check_cmd", "parse and check a net or solver file; print its layers"),
    "convert": ("netspec.cli.convert_cmd", "write a net as standalone PyTorch source"),
    "train": ("netspec.cli.train_cmd", "train with a Caffe solver file (any BP mode)"),
    "schedule": ("netspec.cli.schedule_cmd", "print the backward schedule of a solver file"),
    "time": ("netspec.cli.time_cmd", "time a net per layer and in total, like `caffe time`"),
    "draw": ("netspec.cli.draw_cmd", "draw a net coloured by the losses whose gradient reaches each layer"),
}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):            # argparse exits by itself; we want exit code 2, no traceback
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: error: {message}")


def shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``blob=N,C,H,W`` for --input-shape."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected blob=N,C,H,W, got '{text}'")
    return name, shape


def add_state_options(p: argparse.ArgumentParser) -> None:
    """--phase/--stage/--level/--input-shape, shared by the commands that lower a net."""
    p.add_argument("--phase", choices=["TRAIN", "TEST"], type=str.upper, default=None,
                   help="net phase (default TRAIN; TEST for deploy nets)")
    p.add_argument("--stage", action="append", default=[], metavar="S",
                   help="a NetState stage (repeatable)")
    p.add_argument("--level", type=int, default=0, metavar="N", help="the NetState level")
    p.add_argument("--input-shape", action="append", type=shape_arg, default=[], metavar="BLOB=N,C,H,W",
                   help="shape of a net input whose data source is absent (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    import importlib
    parser = _Parser(prog="netspec", description="Caffe-style declarative network compiler on PyTorch.")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="diagnostic format (json: a list of objects on stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (modname, help_) in COMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--format", choices=["text", "json"], default=argparse.SUPPRESS,
                       help="diagnostic format")
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except SystemExit as e:              # --help
        return int(e.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    return run_guarded(args.run, args)


def run_guarded(fn: Callable, args) -> int:
    try:
        return fn(args)
    except NetspecError as e:
        report(e.diagnostics, args.format)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def report(diags, fmt: str = "text") -> None:
    if fmt == "json":
        print(to_json(diags), file=sys.stderr)
    else:
        print(render_all(diags), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
