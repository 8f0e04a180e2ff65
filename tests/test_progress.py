"""`netspec train` draws a tqdm bar on a terminal and stays plain on a pipe."""
import io

from netspec.cli.progress import training_progress
from netspec.solve.solver import Solver

from test_solver import SHAPES, write_solver


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_counts_iterations_and_keeps_the_log(tmp_path):
    solver = Solver(write_solver(tmp_path, "JOINT", max_iter=4), input_shapes=SHAPES, log=print)
    screen = Terminal()
    with training_progress(solver, screen) as bar:
        solver.step(3)
        assert bar.n == 3 and bar.total == 4
    text = screen.getvalue()
    assert "3/4" in text and "loss=" in text               # the bar itself
    assert "Iteration 2, lr = 0.01" in text                # log lines written above it
    assert solver.listeners == [] and solver.log is print  # detached afterwards


def test_no_bar_on_a_pipe(tmp_path):
    lines = []
    solver = Solver(write_solver(tmp_path, "JOINT", max_iter=2), input_shapes=SHAPES, log=lines.append)
    pipe = io.StringIO()
    with training_progress(solver, pipe) as bar:
        solver.step(2)
    assert bar is None and pipe.getvalue() == ""
    assert "Iteration 1, lr = 0.01" in lines
