#!/usr/bin/env python
"""Caffe-tradition ``parse_log.py`` for the JSON-lines log of ``netspec train --log FILE``.

Writes two comma-separated tables into OUTPUT_DIR, named like Caffe's: LOG.train
(NumIters, Seconds, LearningRate, loss, smoothed_loss, then each loss layer's
unweighted value) and LOG.test (NumIters, Seconds, LearningRate, TestNet, then
every test output, i.e. each exit's accuracy).  Seconds is the training time
summed up to that row.  The reading is netspec.tools.trainlog's.

examples:
  netspec train --solver models/digits/solver_relay.prototxt --log relay.jsonl
  python tools/parse_log.py relay.jsonl .      # writes ./relay.jsonl.train and ./relay.jsonl.test
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import run_script  # noqa: E402
from netspec.tools.trainlog import read_log, test_table, train_table, write_table  # noqa: E402


def add_arguments(p) -> None:
    p.add_argument("logfile", help="JSON-lines log from netspec train --log")
    p.add_argument("output_dir", type=Path, help="where LOG.train and LOG.test are written")
    p.add_argument("--delimiter", default=",", help="column delimiter (default ',')")
    p.add_argument("--verbose", action="store_true", help="print the tables' paths and sizes")


def run(args) -> int:
    train, test = read_log(args.logfile)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    base = Path(args.logfile).name
    for suffix, (header, rows) in (("train", train_table(train)), ("test", test_table(train, test))):
        out = args.output_dir / f"{base}.{suffix}"
        write_table(out, header, rows, args.delimiter)
        if args.verbose:
            print(f"wrote {out}: {len(rows)} rows, columns {', '.join(header)}")
    return 0


def parse_main(argv: list[str]) -> int:
    return run_script("parse_log.py", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(parse_main(sys.argv[1:]))
