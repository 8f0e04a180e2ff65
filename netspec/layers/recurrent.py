"""Recurrent layers: LSTM, RNN (Caffe's RecurrentLayer family) and LSTMUnit.

Caffe unrolls a recurrent layer into an inner net over T timesteps; netspec runs the
same recurrence in one module (netspec/runtime/recurrent.py) with Caffe's blob order,
gate layout (i, f, o, g), sequence-continuation rule (``cont == 0`` starts a new
sequence) and its carry-over of the final hidden state into the next forward.
"""
from __future__ import annotations

from .base import Layer, LayerError, ShapeError, count, fmt_shape, register


class _Recurrent(Layer):
    """Bottoms x (T, N, ...), cont (T, N), [x_static (N, ...)], [exposed initial states];
    tops: the output sequence (T, N, num_output), [exposed final states (1, N, num_output)]."""

    param = "recurrent_param"
    bottoms = (2, 5)
    tops = (1, 3)
    states: tuple = ()              # names of the recurrent states, in Caffe's order

    def setup(self):
        self.positive(self.p.num_output, "num_output")
        self.check_filler("weight_filler")
        self.check_filler("bias_filler")
        exposed = len(self.states) if self.p.expose_hidden else 0
        nb, nt = len(self.lp.bottom), len(self.lp.top)
        if nb not in (2 + exposed, 3 + exposed):
            want = f"x, cont, [x_static]{''.join(', ' + s + '_0' for s in self.states[:exposed])}"
            raise LayerError(f"{self.type} takes {2 + exposed} or {3 + exposed} bottoms ({want}), "
                             f"got {nb}", ("bottom",))
        if nt != 1 + exposed:
            raise LayerError(f"{self.type} has {1 + exposed} top(s) here, got {nt}", ("top",),
                             help=["expose_hidden: true adds one top per recurrent state"
                                   f" ({', '.join(s + '_T' for s in self.states)})"])
        self.static = nb == 3 + exposed
        # Caffe never back-propagates into cont, nor into exposed initial states (data only)
        self.no_grad_bottoms = (1,) + tuple(range(nb - exposed, nb))
        self.blobs = self.blob_names()

    def infer(self, shapes):
        x, cont = shapes[:2]
        if len(x) < 2:
            raise ShapeError(f"bottom 0 must have at least 2 axes (timesteps, streams, ...), "
                             f"got {fmt_shape(x)}")
        t, n = x[0], x[1]
        if tuple(cont) != (t, n):
            raise ShapeError(f"bottom 1 (cont) must be (timesteps, streams) = ({t}, {n}), "
                             f"got {fmt_shape(cont)}")
        if self.static and (len(shapes[2]) < 1 or shapes[2][0] != n):
            raise ShapeError(f"bottom 2 (x_static) must be ({n}, ...), got {fmt_shape(shapes[2])}")
        state = (1, n, self.p.num_output)
        for i, s in enumerate(shapes[2 + self.static:], 2 + self.static):
            if tuple(s) != state:
                raise ShapeError(f"bottom {i} (initial state) must be {fmt_shape(state)}, got {fmt_shape(s)}")
        return [(t, n, self.p.num_output)] + [state] * (len(self.lp.top) - 1)

    def dims(self, shapes) -> tuple[int, int | None]:
        """(K, S): input features per step and static features (None without x_static)."""
        return count(shapes[0], 2), count(shapes[2], 1) if self.static else None

    def module(self, shapes):
        k, s = self.dims(shapes)
        return f"{self.runtime[0]}({k}, {self.p.num_output}, static={s}, expose_hidden={self.p.expose_hidden})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({', '.join(bottoms)})"


@register
class LSTM(_Recurrent):
    """Long short-term memory over a sequence (Caffe's LSTMLayer)."""

    type = "LSTM"
    runtime = ("CaffeLSTM",)
    states = ("h", "c")

    def blob_names(self):
        return ("W_xc", "b_c") + (("W_xc_static",) if self.static else ()) + ("W_hc",)

    def blob_shapes(self, shapes):
        k, s = self.dims(shapes)
        h = self.p.num_output
        return [(4 * h, k), (4 * h,)] + ([(4 * h, s)] if self.static else []) + [(4 * h, h)]

    def fillers(self):
        w, b = self.p.weight_filler, self.p.bias_filler
        return [w, b] + ([w] if self.static else []) + [w]


@register
class RNN(_Recurrent):
    """Elman recurrent net with a tanh hidden state and a tanh output (Caffe's RNNLayer)."""

    type = "RNN"
    runtime = ("CaffeRNN",)
    states = ("h",)

    def blob_names(self):
        return ("W_xh", "b_h") + (("W_xh_static",) if self.static else ()) + ("W_hh", "W_ho", "b_o")

    def blob_shapes(self, shapes):
        k, s = self.dims(shapes)
        h = self.p.num_output
        return [(h, k), (h,)] + ([(h, s)] if self.static else []) + [(h, h), (h, h), (h,)]

    def fillers(self):
        w, b = self.p.weight_filler, self.p.bias_filler
        return [w, b] + ([w] if self.static else []) + [w, w, b]


@register
class LSTMUnit(Layer):
    """One LSTM step: bottoms c_prev (1, N, D), gate inputs (1, N, 4D), cont (1, N);
    tops c and h (1, N, D)."""

    type = "LSTMUnit"
    bottoms = (3, 3)
    tops = (2, 2)
    runtime = ("caffe_lstm_unit",)
    no_grad_bottoms = (2,)

    def infer(self, shapes):
        c, x, cont = shapes
        if len(c) != 3 or c[0] != 1:
            raise ShapeError(f"bottom 0 (c_prev) must be (1, N, D), got {fmt_shape(c)}")
        n, d = c[1], c[2]
        if tuple(x) != (1, n, 4 * d):
            raise ShapeError(f"bottom 1 (gate inputs) must be (1, {n}, {4 * d}) for c_prev "
                             f"{fmt_shape(c)}, got {fmt_shape(x)}")
        if tuple(cont) != (1, n):
            raise ShapeError(f"bottom 2 (cont) must be (1, {n}), got {fmt_shape(cont)}")
        return [tuple(c), tuple(c)]

    def forward(self, bottoms, shapes):
        return f"caffe_lstm_unit({', '.join(bottoms)})"
