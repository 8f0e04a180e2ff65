"""The ``netspec`` command line: one parser, shared options, one error format.

Exit codes: 0 ok, 1 user error (a diagnostic was printed), 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..diagnostics import Diagnostic, NetspecError, render_all, to_json

# name -> (module, help); each module has add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("netspec.cli.check_cmd", "parse and check a net or solver file; print its layers"),
    "convert": ("netspec.cli.convert_cmd", "write a net as standalone PyTorch source"),
    "upgrade": ("netspec.cli.upgrade_cmd", "print a V0/V1 net or old solver file in the current format"),
    "train": ("netspec.cli.train_cmd", "train with a Caffe solver file (any BP mode)"),
    "test": ("netspec.cli.test_cmd", "score trained weights on a net's TEST data, like `caffe test`"),
    "schedule": ("netspec.cli.schedule_cmd", "print the backward schedule of a solver file"),
    "time": ("netspec.cli.time_cmd", "time a net per layer and in total, like `caffe time`"),
    "draw": ("netspec.cli.draw_cmd", "draw a net coloured by the losses whose gradient reaches each layer"),
    "export": ("netspec.cli.export_cmd", "export a trained net or one exit as prototxt, python, onnx or pt2"),
    "probe": ("netspec.cli.probe_cmd", "mean |dL/dW| per weight layer and loss; where CNDS puts a branch"),
    "add-exits": ("netspec.cli.add_exits_cmd", "add auxiliary exits (deep supervision) to a net"),
}


class UsageError(Exception):
    """A command line argparse rejected; reported as diagnostic E0802, exit code 2."""

    def __init__(self, prog: str, message: str, usage: str):
        super().__init__(message)
        self.diagnostic = Diagnostic("E0802", f"{prog}: {message}", help=[f"see `{prog} --help`"],
                                     notes=[usage.strip()])


class _Parser(argparse.ArgumentParser):
    def error(self, message):            # argparse exits by itself; we want exit code 2, no traceback
        raise UsageError(self.prog, message, self.format_usage())


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


def positive_int(text: str) -> int:
    """An argparse type for counts such as --iterations: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type for counts where 0 means "none" (probe's --iterations, --repeats)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return int(text)


def gpu_id(text: str) -> str:
    """Validate --gpu's value: a CUDA device index, 'all' or 'cpu' (as Caffe's --gpu)."""
    if text.isdigit() or text in ("all", "cpu"):
        return text
    raise argparse.ArgumentTypeError(f"expected a GPU id (0, 1, ...), 'all' or 'cpu', got '{text}'")


def add_gpu_option(p: argparse.ArgumentParser) -> None:
    """--gpu [ID], shared by the commands that run a net (train, test, time)."""
    p.add_argument("--gpu", nargs="?", const="0", default=None, type=gpu_id, metavar="ID",
                   help="run on CUDA device ID (default 0 when ID is omitted; 'cpu' forces the CPU)")


def gpu_before_file(argv: list[str]) -> list[str]:
    """``--gpu net.prototxt``: the optional ID must not swallow the file that follows, so a
    value that is no GPU id but names a file is left as the positional argument."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        nxt = out[i + 1]
        if a == "--gpu" and not nxt.startswith("-") and not nxt.isdigit() and nxt not in ("all", "cpu") \
                and ("." in nxt or "/" in nxt):
            out.insert(i + 1, "0")
            break
    return out


def device_of(gpu: str | None) -> str:
    """The torch device an --gpu value names; a clear error when CUDA is absent."""
    if gpu in (None, "cpu"):
        return "cpu"
    import torch
    if not torch.cuda.is_available():
        raise NetspecError([Diagnostic("E0801", "--gpu asks for CUDA but no CUDA device is available",
                                       help=["drop --gpu to run on the CPU"])])
    return f"cuda:{0 if gpu == 'all' else int(gpu)}"


def _help_parts(doc: str | None) -> tuple[str, str | None]:
    """A command module's docstring split into argparse description and epilog (its examples)."""
    head, sep, tail = (doc or "").partition("\nexamples:\n")
    return head.strip(), ("examples:\n" + tail.rstrip()) if sep else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv``, only the command it names loads its module (the
    others get their one-line help), so `netspec check` does not import torch for `train`."""
    import importlib
    chosen = next((a for a in argv if a in COMMANDS), None) if argv is not None else None
    parser = _Parser(prog="netspec", description="Caffe-style declarative network compiler on PyTorch.")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="diagnostic format (json: a list of objects on stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True                  # a bare `netspec` is a usage error like any other
    for name, (modname, help_) in COMMANDS.items():
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=help_)
            continue
        mod = importlib.import_module(modname)
        description, epilog = _help_parts(mod.__doc__)
        p = sub.add_parser(name, help=help_, description=description, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--format", choices=["text", "json"], default=argparse.SUPPRESS,
                       help="diagnostic format")
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code."""
    return parse_and_run(build_parser(sys.argv[1:] if argv is None else argv), argv)


def run_script(prog: str, doc: str | None, add_arguments: Callable, run: Callable,
               argv: list[str] | None = None) -> int:
    """A standalone tool (``tools/*.py``) with the CLI's help layout, error format and exit codes."""
    description, epilog = _help_parts(doc)
    parser = _Parser(prog=prog, description=description, epilog=epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=["text", "json"], default="text", help="diagnostic format")
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parse_and_run(parser, argv)


def parse_and_run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse (usage errors: exit 2, as a diagnostic) and run ``args.run`` guarded."""
    try:
        args = parser.parse_args(gpu_before_file(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        report([e.diagnostic], _format_in(argv))
        return 2
    except SystemExit as e:              # --help
        return int(e.code or 0)
    return run_guarded(args.run, args)


def run_guarded(fn: Callable, args) -> int:
    """``fn(args)``, with user errors reported as diagnostics (exit 1), never as a traceback."""
    try:
        return fn(args)
    except NetspecError as e:
        report(e.diagnostics, args.format)
        return 1
    except OSError as e:                 # e.g. an output folder that does not exist
        where = f" '{e.filename}'" if e.filename else ""
        report([Diagnostic("E0104", f"cannot access{where}: {e.strerror or e}")], args.format)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:     # allocation failures: a diagnostic naming the layer
        from ..check.memory import memory_error
        oom = memory_error(e)
        if oom is None:
            raise
        report(oom.diagnostics, args.format)
        return 1


def _format_in(argv: list[str] | None) -> str:
    """--format as given, for errors found before argparse finished (usage errors)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(argv):
        value = a.partition("=")[2] if a.startswith("--format=") else \
            (argv[i + 1] if a == "--format" and i + 1 < len(argv) else None)
        if value is not None:
            return value if value in ("text", "json") else "text"
    return "text"


def report(diags, fmt: str = "text") -> None:
    """Print diagnostics on stderr, rendered with carets (text) or as a JSON list."""
    if fmt == "json":
        print(to_json(diags), file=sys.stderr)
    else:
        print(render_all(diags), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
