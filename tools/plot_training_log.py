#!/usr/bin/env python
"""Plot a ``netspec train --log`` JSON-lines log: losses and test outputs vs iteration.

Two panels side by side: the training loss (smoothed and raw, or the --train
columns) and the test outputs (the --test names; by default every accuracy
output, i.e. each exit's accuracy).  OUT's extension picks the format: .svg is
written directly, .png/.jpg/... with Pillow, so no plotting library is needed.
The drawing is netspec.tools.plot_log's.

examples:
  python tools/plot_training_log.py relay.jsonl relay.png
  python tools/plot_training_log.py relay.jsonl acc.svg --train smoothed_loss --test main_accuracy
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import run_script  # noqa: E402
from netspec.tools.plot_log import plot  # noqa: E402
from netspec.tools.trainlog import read_log  # noqa: E402


def add_arguments(p) -> None:
    p.add_argument("logfile", help="JSON-lines log from netspec train --log")
    p.add_argument("output", type=Path, help="image file (.svg, .png, .jpg, ...)")
    p.add_argument("--train", nargs="+", metavar="K", help="train columns (default smoothed_loss loss)")
    p.add_argument("--test", nargs="+", metavar="K", help="test outputs (default every accuracy)")


def run(args) -> int:
    plot(*read_log(args.logfile), args.output, args.train, args.test)
    print(f"wrote {args.output}")
    return 0


def plot_main(argv: list[str]) -> int:
    return run_script("plot_training_log.py", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(plot_main(sys.argv[1:]))
