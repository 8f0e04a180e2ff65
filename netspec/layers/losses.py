"""Loss layers: each top 0 is a 0-d loss blob, weighted 1 by default (Caffe's rule).

Layers return the unweighted loss; the framework applies loss_weight.  Shape checks
are Caffe's Reshape checks (LossLayer: bottoms 0 and 1 share their first dimension).
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf.message import DecodeError

from ..proto import caffe_pb2
from .base import Layer, LayerError, ShapeError, canonical_axis, count, fmt_shape, register

LossParameter = caffe_pb2.LossParameter


def normalization(layer: Layer, default: int) -> str:
    """Caffe's normalization mode name, honouring the deprecated ``normalize`` flag."""
    lp = layer.lp.loss_param
    if lp.HasField("normalization"):
        mode = lp.normalization
    elif lp.HasField("normalize"):
        mode = LossParameter.VALID if lp.normalize else LossParameter.BATCH_SIZE
    else:
        mode = default
    return LossParameter.NormalizationMode.Name(mode)


def ignore_label(layer: Layer):
    """``loss_param.ignore_label`` or None when unset."""
    lp = layer.lp.loss_param
    return lp.ignore_label if lp.HasField("ignore_label") else None


def legacy_dim(shape: tuple, i: int) -> int:
    """Caffe's legacy accessors (num/channels/height/width): missing axes read as 1."""
    return shape[i] if i < len(shape) else 1


class LossLayer(Layer):
    is_loss = True
    bottoms = (2, 2)
    tops = (1, 1)
    no_grad_bottoms = (1,)          # the label / target of classification losses

    def check_second_top(self) -> None:
        """Caffe adds loss_weight 1 to a loss layer without any, then requires one per
        top: a second top is only accepted with loss_weight given for both."""
        if self.num_tops() == 2 and len(self.lp.loss_weight) != 2:
            raise LayerError(f"{self.type} with a second top needs loss_weight once per top "
                             f"(Caffe: 'loss_weight must be unspecified or specified once per "
                             f"top blob')", ("top", 1),
                             help=["add `loss_weight: 1` and `loss_weight: 0` (one per top), "
                                   "or drop the second top and use a Softmax layer"])

    def check_num(self, shapes) -> None:
        """LossLayer::Reshape: the data and the label share their first dimension."""
        a, b = shapes[0], shapes[1]
        if not a or not b or a[0] != b[0]:
            raise ShapeError(f"bottoms {fmt_shape(a)} and {fmt_shape(b)} must have the same first "
                             "dimension (the batch size)",
                             help=["give the data and the label the same number of samples"])

    def check_flat(self, shape, what: str) -> None:
        """Caffe reads ``what`` with legacy accessors that must be 1 beyond the first axis."""
        if len(shape) > 4 or any(legacy_dim(shape, i) != 1 for i in (1, 2, 3)):
            raise ShapeError(f"the {what} must be (N,) or (N, 1, 1, 1), got {fmt_shape(shape)}",
                             help=[f"give one {what} value per sample"])

    def infer(self, shapes):
        self.check_num(shapes)
        return [()]


@register
class SoftmaxWithLoss(LossLayer):
    """Softmax over ``axis`` then multinomial logistic loss, normalised as Caffe does.

    The optional second top is the softmax itself; like Caffe, no gradient flows back
    through it.
    """

    type = "SoftmaxWithLoss"
    param = "softmax_param"
    tops = (1, 2)
    runtime = ("caffe_softmax_loss",)

    def setup(self):
        self.check_second_top()
        self.mode = normalization(self, LossParameter.VALID)
        self.ignore = ignore_label(self)

    def infer(self, shapes):
        self.check_num(shapes)
        x, label = shapes
        axis = canonical_axis(self.p.axis, len(x), self, self.field("axis"))
        outer, inner = count(x, 0, axis), count(x, axis + 1)
        if count(label) != outer * inner:
            raise ShapeError(f"the label has {count(label)} elements but the scores need "
                             f"{outer} x {inner} = {outer * inner} (one per position outside axis {axis})",
                             help=["labels are (N,) or (N, 1, H, W) class indices"])
        return [()] + ([tuple(x)] if self.num_tops() == 2 else [])

    def forward(self, bottoms, shapes):
        axis = self.p.axis % len(shapes[0])
        call = (f"caffe_softmax_loss({bottoms[0]}, {bottoms[1]}, axis={axis}, "
                f"ignore_label={self.ignore!r}, normalization={self.mode!r})")
        if self.num_tops() == 2:
            return f"{call}, F.softmax({bottoms[0]}, dim={axis}).detach()"
        return call


@register
class EuclideanLoss(LossLayer):
    """sum((a - b)^2) / (2 N); unlike classification losses both bottoms get gradient."""

    type = "EuclideanLoss"
    no_grad_bottoms = ()
    runtime = ("caffe_euclidean_loss",)

    def infer(self, shapes):
        self.check_num(shapes)
        a, b = shapes
        if count(a, 1) != count(b, 1):
            raise ShapeError(f"bottoms {fmt_shape(a)} and {fmt_shape(b)} must have the same "
                             "number of values per sample", help=["give both bottoms the same shape"])
        return [()]

    def forward(self, bottoms, shapes):
        return f"caffe_euclidean_loss({bottoms[0]}, {bottoms[1]})"


@register
class SigmoidCrossEntropyLoss(LossLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1]; normalised by BATCH_SIZE
    by default (the only loss whose default differs from VALID)."""

    type = "SigmoidCrossEntropyLoss"
    runtime = ("caffe_sigmoid_cross_entropy_loss",)

    def setup(self):
        self.mode = normalization(self, LossParameter.BATCH_SIZE)
        self.ignore = ignore_label(self)

    def infer(self, shapes):
        self.check_num(shapes)
        if count(shapes[0]) != count(shapes[1]):
            raise ShapeError(f"the scores {fmt_shape(shapes[0])} and the targets {fmt_shape(shapes[1])} "
                             "must have the same count", help=["give one target per score"])
        return [()]

    def forward(self, bottoms, shapes):
        return (f"caffe_sigmoid_cross_entropy_loss({bottoms[0]}, {bottoms[1]}, "
                f"ignore_label={self.ignore!r}, normalization={self.mode!r})")


@register
class HingeLoss(LossLayer):
    """One-vs-all hinge loss on scores (N, ...) and class-index labels; L1 or L2 norm."""

    type = "HingeLoss"
    param = "hinge_loss_param"
    runtime = ("caffe_hinge_loss",)

    def setup(self):
        self.norm = caffe_pb2.HingeLossParameter.Norm.Name(self.p.norm)

    def forward(self, bottoms, shapes):
        return f"caffe_hinge_loss({bottoms[0]}, {bottoms[1]}, norm={self.norm!r})"


@register
class MultinomialLogisticLoss(LossLayer):
    """-log(p[label]) averaged over N, on probabilities (log clamped at 1e-20)."""

    type = "MultinomialLogisticLoss"
    runtime = ("caffe_multinomial_logistic_loss",)

    def infer(self, shapes):
        self.check_num(shapes)
        self.check_flat(shapes[1], "label")
        return [()]

    def forward(self, bottoms, shapes):
        return f"caffe_multinomial_logistic_loss({bottoms[0]}, {bottoms[1]})"


@register
class ContrastiveLoss(LossLayer):
    """Siamese loss on feature pairs (a, b) (N, C) and similarity labels y (N,)."""

    type = "ContrastiveLoss"
    param = "contrastive_loss_param"
    bottoms = (3, 3)
    no_grad_bottoms = (2,)
    runtime = ("caffe_contrastive_loss",)

    def infer(self, shapes):
        self.check_num(shapes)
        a, b, y = shapes
        for s in (a, b):
            if len(s) > 4 or legacy_dim(s, 2) != 1 or legacy_dim(s, 3) != 1:
                raise ShapeError(f"features must be (N, C) or (N, C, 1, 1), got {fmt_shape(s)}",
                                 help=["flatten the features first (e.g. InnerProduct)"])
        if legacy_dim(a, 1) != legacy_dim(b, 1):
            raise ShapeError(f"the paired features {fmt_shape(a)} and {fmt_shape(b)} differ in channels",
                             help=["both bottoms must have the same feature size"])
        self.check_flat(y, "similarity label")
        return [()]

    def forward(self, bottoms, shapes):
        return (f"caffe_contrastive_loss({bottoms[0]}, {bottoms[1]}, {bottoms[2]}, "
                f"margin={self.p.margin!r}, legacy={self.p.legacy_version})")


@register
class InfogainLoss(LossLayer):
    """Softmax over ``axis``, then -sum_l H[label, l] log p_l, normalised (VALID default).

    H (C x C) is the third bottom, or a binary BlobProto read at setup from
    ``infogain_loss_param.source`` relative to the working directory, as Caffe does.
    """

    type = "InfogainLoss"
    param = "infogain_loss_param"
    bottoms = (2, 3)
    tops = (1, 2)
    no_grad_bottoms = (1, 2)        # Caffe cannot back-propagate into labels or H
    runtime = ("CaffeInfogainLoss", "caffe_infogain_loss")

    def setup(self):
        self.check_second_top()
        if self.lp.loss_param.HasField("normalize"):
            raise LayerError("InfogainLoss refuses the deprecated `normalize` flag",
                             ("loss_param", "normalize"),
                             help=["use `normalization: VALID` (the default), FULL, BATCH_SIZE or NONE"])
        self.mode = normalization(self, LossParameter.VALID)
        self.ignore = ignore_label(self)
        self.H = None if len(self.lp.bottom) > 2 else self._read_h()

    def _read_h(self):
        from ..interop.blobproto import read_blobproto
        if not self.p.source:
            raise LayerError("InfogainLoss needs the infogain matrix H", self.field("source"),
                             help=["set infogain_loss_param { source: \"H.binaryproto\" }, "
                                   "or give H as a third bottom"])
        path = self.p.source
        try:
            return read_blobproto(path)
        except OSError as e:
            why = e.strerror or str(e)
        except (DecodeError, ValueError) as e:
            why = f"not a binary BlobProto ({e})"
        raise LayerError(f"cannot read the infogain matrix '{path}': {why}", self.field("source"),
                         help=[f"the path is relative to the working directory ({Path.cwd()})"])

    def infer(self, shapes):
        self.check_num(shapes)
        x, label = shapes[0], shapes[1]
        axis = canonical_axis(self.p.axis, len(x), self, self.field("axis"))
        outer, inner, c = count(x, 0, axis), count(x, axis + 1), x[axis]
        if count(label) != outer * inner:
            raise ShapeError(f"the label has {count(label)} elements but the scores need "
                             f"{outer} x {inner} = {outer * inner} (one per position outside axis {axis})",
                             help=["labels are (N,) or (N, 1, H, W) class indices"])
        h = tuple(self.H.shape) if self.H is not None else shapes[2]
        if count(h) != c * c:
            where = f"'{self.p.source}'" if self.H is not None else "the third bottom"
            raise ShapeError(f"the infogain matrix H from {where} has shape {fmt_shape(h)} but the "
                             f"scores have {c} classes along axis {axis}",
                             help=[f"H must hold {c} x {c} = {c * c} values"])
        return [()] + ([tuple(x)] if self.num_tops() == 2 else [])

    def module(self, shapes):
        if self.H is None:
            return None
        axis = self.p.axis % len(shapes[0])
        c = shapes[0][axis]
        rows = [[float(v) for v in row] for row in self.H.reshape(c, c)]
        return (f"CaffeInfogainLoss({rows!r}, axis={axis}, ignore_label={self.ignore!r}, "
                f"normalization={self.mode!r})")

    def forward(self, bottoms, shapes):
        axis = self.p.axis % len(shapes[0])
        if self.H is None:
            call = (f"caffe_infogain_loss({bottoms[0]}, {bottoms[1]}, {bottoms[2]}, axis={axis}, "
                    f"ignore_label={self.ignore!r}, normalization={self.mode!r})")
        else:
            call = f"{self.mod()}({bottoms[0]}, {bottoms[1]})"
        if self.num_tops() == 2:
            return f"{call}, F.softmax({bottoms[0]}, dim={axis}).detach()"
        return call
