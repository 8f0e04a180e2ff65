import math  # noqa: F401

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401

__all__ = ["CaffeLSTMUnitFunction", "caffe_lstm_unit", "caffe_recurrent_state", "CaffeLSTM",
           "CaffeRNN"]


class CaffeLSTMUnitFunction(torch.autograd.Function):
    """Caffe's LSTMUnit: gates (i, f, o, g) = (sig, sig, sig, tanh) of x's four slices;
    c = f * c_prev + i * g with f forced to 0 where cont == 0, h = o * tanh(c).

    The backward is Caffe's LSTMUnitLayer::Backward_cpu, which uses f * (1 - f) for the
    forget gate even when cont is not 0 or 1 (autograd would use cont * s * (1 - s)).
    """

    @staticmethod
    def forward(ctx, c_prev, x, cont):
        d = c_prev.shape[-1]
        i, f, o = (torch.sigmoid(x[..., k * d:(k + 1) * d]) for k in range(3))
        g = torch.tanh(x[..., 3 * d:])
        cont = cont.unsqueeze(-1).to(x.dtype)
        f = torch.where(cont == 0, torch.zeros_like(f), cont * f)
        c = f * c_prev + i * g
        ctx.save_for_backward(c_prev, i, f, o, g, c)
        return c, o * torch.tanh(c)

    @staticmethod
    def backward(ctx, dc, dh):
        c_prev, i, f, o, g, c = ctx.saved_tensors
        tanh_c = torch.tanh(c)
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        dx = torch.cat([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                        dh * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], -1)
        return c_term * f, dx, None


def caffe_lstm_unit(c_prev, x, cont):
    """Caffe LSTMUnit: (c, h) from c_prev (1, N, D), gate inputs x (1, N, 4D), cont (1, N)."""
    return CaffeLSTMUnitFunction.apply(c_prev, x, cont.detach())


def caffe_recurrent_state(held, shape, like):
    """The hidden state a Caffe recurrent layer starts from: the last forward's final state
    (Caffe copies h_T into h_0 between batches; cont == 0 resets it), zeros at first or after
    the number of streams changes."""
    if held is None or tuple(held.shape) != tuple(shape) or held.dtype != like.dtype \
            or held.device != like.device:
        return like.new_zeros(shape)
    return held


class CaffeLSTM(nn.Module):
    """Caffe LSTM over (T, N, ...) inputs with sequence-continuation indicators (T, N).

    Blobs in Caffe's order: W_xc (4H, K), b_c (4H,), [W_xc_static (4H, S)], W_hc (4H, H).
    Without ``expose_hidden`` the final (h, c) seed the next forward, as in Caffe; with it,
    h_0/c_0 are inputs and h_T/c_T outputs, neither carrying a gradient (Caffe shares
    their data only).
    """

    def __init__(self, k, hidden, static=None, expose_hidden=False):
        super().__init__()
        self.hidden, self.expose_hidden = hidden, expose_hidden
        self.W_xc = nn.Parameter(torch.zeros(4 * hidden, k))
        self.b_c = nn.Parameter(torch.zeros(4 * hidden))
        self.W_xc_static = nn.Parameter(torch.zeros(4 * hidden, static)) if static else None
        self.W_hc = nn.Parameter(torch.zeros(4 * hidden, hidden))
        self.state = (None, None)

    def forward(self, x, cont, *rest):
        static = rest[0] if self.W_xc_static is not None else None
        shape = (1, cont.shape[1], self.hidden)
        if self.expose_hidden:
            h, c = (t.detach() for t in rest[-2:])
        else:
            h, c = (caffe_recurrent_state(s, shape, x) for s in self.state)
        gates_x = F.linear(x.flatten(2), self.W_xc, self.b_c)
        if static is not None:
            static = F.linear(static.flatten(1), self.W_xc_static)[None]
        cont = cont.detach()
        outs = []
        for t in range(cont.shape[0]):
            gate = F.linear(h * cont[t, None, :, None], self.W_hc) + gates_x[t:t + 1]
            if static is not None:
                gate = gate + static
            c, h = caffe_lstm_unit(c, gate, cont[t:t + 1])
            outs.append(h)
        if self.expose_hidden:
            return torch.cat(outs), h.detach(), c.detach()
        self.state = (h.detach(), c.detach())
        return torch.cat(outs)


class CaffeRNN(nn.Module):
    """Caffe RNN: h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]),
    o_t = tanh(W_ho h_t + b_o).  Blobs in Caffe's order: W_xh, b_h, [W_xh_static], W_hh,
    W_ho, b_o.  The hidden state carries over between forwards as in :class:`CaffeLSTM`.
    """

    def __init__(self, k, hidden, static=None, expose_hidden=False):
        super().__init__()
        self.hidden, self.expose_hidden = hidden, expose_hidden
        self.W_xh = nn.Parameter(torch.zeros(hidden, k))
        self.b_h = nn.Parameter(torch.zeros(hidden))
        self.W_xh_static = nn.Parameter(torch.zeros(hidden, static)) if static else None
        self.W_hh = nn.Parameter(torch.zeros(hidden, hidden))
        self.W_ho = nn.Parameter(torch.zeros(hidden, hidden))
        self.b_o = nn.Parameter(torch.zeros(hidden))
        self.state = None

    def forward(self, x, cont, *rest):
        static = rest[0] if self.W_xh_static is not None else None
        shape = (1, cont.shape[1], self.hidden)
        h = rest[-1].detach() if self.expose_hidden else caffe_recurrent_state(self.state, shape, x)
        hidden_x = F.linear(x.flatten(2), self.W_xh, self.b_h)
        if static is not None:
            static = F.linear(static.flatten(1), self.W_xh_static)[None]
        cont = cont.detach()
        outs = []
        for t in range(cont.shape[0]):
            pre = F.linear(h * cont[t, None, :, None], self.W_hh) + hidden_x[t:t + 1]
            h = torch.tanh(pre + static if static is not None else pre)
            outs.append(torch.tanh(F.linear(h, self.W_ho, self.b_o)))
        if self.expose_hidden:
            return torch.cat(outs), h.detach()
        self.state = h.detach()
        return torch.cat(outs)
