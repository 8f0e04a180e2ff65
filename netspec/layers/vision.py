"""Vision layers: convolution, deconvolution, pooling and the other spatial layers."""
from __future__ import annotations

from ..proto import caffe_pb2
from .geometry import caffe_pool_size, caffe_spp_level
from .base import TEST, Layer, LayerError, ShapeError, canonical_axis, fmt_shape, register
from .neurons import lit

PoolingParameter = caffe_pb2.PoolingParameter


def spatial_values(layer: Layer, name: str, n: int, default: int) -> list[int]:
    """Caffe's N-d geometry fields: ``name_h``/``name_w`` (2-D only) or a repeated ``name``."""
    p = layer.p
    fields = p.DESCRIPTOR.fields_by_name
    has_hw = f"{name}_h" in fields and (p.HasField(f"{name}_h") or p.HasField(f"{name}_w"))
    rep = list(getattr(p, name)) if name != "kernel" else list(p.kernel_size)
    rep_name = "kernel_size" if name == "kernel" else name
    if has_hw:
        if n != 2:
            raise LayerError(f"{name}_h/{name}_w can only be used with 2 spatial axes, here {n}",
                             layer.field(f"{name}_h"))
        if rep:
            raise LayerError(f"give either {rep_name} or {name}_h/{name}_w, not both",
                             layer.field(rep_name, 0))
        missing = [a for a in "hw" if not p.HasField(f"{name}_{a}")]
        if missing and default != 0:        # Caffe reads the pair together: the unset one is 0
            given = "w" if missing == ["h"] else "h"
            value = getattr(p, f"{name}_{given}")
            raise LayerError(f"{name}_{given} is given without {name}_{missing[0]}, which Caffe then "
                             f"reads as 0", layer.field(f"{name}_{given}"),
                             help=[f"add `{name}_{missing[0]}: {value}` (or the value you mean), "
                                   f"or write `{rep_name}: {value}` for both axes"])
        return [getattr(p, f"{name}_h"), getattr(p, f"{name}_w")]
    if not rep:
        if default < 0:
            raise LayerError(f"{rep_name} (or {name}_h and {name}_w) is required",
                             layer.field(), help=[f"add `{rep_name}: 3` to {layer.param}"])
        return [default] * n
    if len(rep) not in (1, n):
        raise LayerError(f"{rep_name} has {len(rep)} values; give 1 or one per spatial axis ({n})",
                         layer.field(rep_name, 0))
    return rep * n if len(rep) == 1 else rep


class _ConvBase(Layer):
    """Shared geometry of Convolution and Deconvolution (Caffe's BaseConvolutionLayer)."""

    param = "convolution_param"
    bottoms = (1, None)
    tops = (1, None)
    blobs = ("weight", "bias")
    runtime = ()

    def setup(self):
        p = self.p
        if len(self.lp.bottom) != len(self.lp.top):
            raise LayerError(f"{self.type} needs as many tops as bottoms "
                             f"({len(self.lp.bottom)} vs {len(self.lp.top)})", ("top",))
        self.positive(p.num_output, "num_output")
        self.positive(p.group, "group")
        if p.num_output % p.group:
            raise LayerError(f"num_output {p.num_output} is not divisible by group {p.group}",
                             self.field("num_output"))
        self.check_filler("weight_filler")
        self.check_filler("bias_filler")
        if not self.p.bias_term:
            self.blobs = ("weight",)

    def geometry(self, shape: tuple) -> tuple[int, list, list, list, list]:
        axis = self.p.axis % len(shape) if -len(shape) <= self.p.axis < len(shape) else None
        if axis is None:
            raise ShapeError(f"axis {self.p.axis} is out of range for a {len(shape)}-D bottom",
                             self.field("axis"))
        n = len(shape) - axis - 1
        if n < 1:
            raise ShapeError(f"the bottom {shape} has no spatial axes after axis {axis}")
        kernel = spatial_values(self, "kernel", n, -1)
        stride = spatial_values(self, "stride", n, 1)
        pad = spatial_values(self, "pad", n, 0)
        dilation = spatial_values(self, "dilation", n, 1)
        for name, vals in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
            if any(v <= 0 for v in vals):
                raise LayerError(f"{name} must be positive, got {vals}", self.field(name))
        return axis, kernel, stride, pad, dilation

    def channels(self, shapes) -> int:
        axis = self.geometry(shapes[0])[0]
        c = shapes[0][axis]
        if c % self.p.group:
            raise ShapeError(f"{c} input channels are not divisible by group {self.p.group}",
                             self.field("group"))
        for s in shapes[1:]:
            if s != shapes[0]:
                raise ShapeError(f"all bottoms must have the same shape, got {shapes[0]} and {s}")
        return c

    def infer(self, shapes):
        self.channels(shapes)
        axis, kernel, stride, pad, dilation = self.geometry(shapes[0])
        out = [self.spatial_out(shapes[0][axis + 1 + i], k, s, p, d, i)
               for i, (k, s, p, d) in enumerate(zip(kernel, stride, pad, dilation))]
        top = tuple(shapes[0][:axis]) + (self.p.num_output,) + tuple(out)
        return [top] * len(shapes)

    def blob_shapes(self, shapes):
        _, kernel, *_ = self.geometry(shapes[0])
        w = self.weight_shape(self.channels(shapes), kernel)
        return [w, (self.p.num_output,)] if self.p.bias_term else [w]

    def fillers(self):
        return [self.p.weight_filler, self.p.bias_filler][:len(self.blobs)]

    def forward(self, bottoms, shapes):
        calls = [f"{self.mod()}({b})" for b in bottoms]
        return calls[0] if len(calls) == 1 else ", ".join(calls)

    def module(self, shapes):
        axis, kernel, stride, pad, dilation = self.geometry(shapes[0])
        if axis != 1 or len(kernel) > 3:
            raise ShapeError(f"only axis 1 with 1 to 3 spatial axes compiles to torch "
                             f"(axis {axis}, {len(kernel)} spatial axes)", self.field("axis"))
        cls = self.torch_class + f"{len(kernel)}d"
        c = self.channels(shapes)
        args = self.torch_channels(c)
        # torch's defaults are left out and a square geometry is one number, as a person writes it
        parts = [str(args[0]), str(args[1]), f"kernel_size={_terse(kernel)}"]
        for name, value, default in (("stride", stride, 1), ("padding", pad, 0), ("dilation", dilation, 1)):
            if any(v != default for v in value):
                parts.append(f"{name}={_terse(value)}")
        if self.p.group != 1:
            parts.append(f"groups={self.p.group}")
        if not self.p.bias_term:
            parts.append("bias=False")
        return f"nn.{cls}({', '.join(parts)})"


def _terse(values) -> str:
    values = tuple(values)
    return str(values[0]) if len(set(values)) == 1 else str(values)


@register
class Convolution(_ConvBase):
    """Caffe Convolution: out = floor((in + 2*pad - (dilation*(k-1)+1)) / stride) + 1."""

    type = "Convolution"
    torch_class = "Conv"

    def spatial_out(self, size, k, s, p, d, i):
        extent = d * (k - 1) + 1
        o = (size + 2 * p - extent) // s + 1
        if o <= 0:
            raise ShapeError(f"the kernel extent {extent} exceeds the padded input "
                             f"{size} + 2*{p} along spatial axis {i}; the output would be empty",
                             self.field("kernel_size"),
                             help=["reduce kernel_size or dilation, or add padding"])
        return o

    def weight_shape(self, c, kernel):
        return (self.p.num_output, c // self.p.group, *kernel)

    def torch_channels(self, c):
        return c, self.p.num_output


@register
class Deconvolution(_ConvBase):
    """Caffe Deconvolution: out = stride*(in-1) + dilation*(k-1)+1 - 2*pad;
    weight (C_in, C_out/group, k...)."""

    type = "Deconvolution"
    torch_class = "ConvTranspose"

    def spatial_out(self, size, k, s, p, d, i):
        o = s * (size - 1) + d * (k - 1) + 1 - 2 * p
        if o <= 0:
            raise ShapeError(f"the padding 2*{p} removes the whole output ({o + 2 * p}) along "
                             f"spatial axis {i}", self.field("pad"), help=["reduce pad"])
        return o

    def weight_shape(self, c, kernel):
        return (c, self.p.num_output // self.p.group, *kernel)

    def torch_channels(self, c):
        return c, self.p.num_output


def pool_hw(layer: Layer, base: str, single: str, default):
    """Pooling's singular geometry fields: ``single`` for both axes, or ``base_h`` and ``base_w``."""
    p = layer.p
    has_h, has_w = p.HasField(f"{base}_h"), p.HasField(f"{base}_w")
    if p.HasField(single) and (has_h or has_w):
        raise LayerError(f"give either {single} or {base}_h and {base}_w, not both",
                         layer.field(f"{base}_h" if has_h else f"{base}_w"))
    if has_h != has_w:
        given, missing = (f"{base}_h", f"{base}_w") if has_h else (f"{base}_w", f"{base}_h")
        raise LayerError(f"{given} needs {missing} as well", layer.field(given),
                         help=[f"add `{missing}`, or give `{single}` for both axes"])
    if has_h:
        return getattr(p, f"{base}_h"), getattr(p, f"{base}_w")
    return (getattr(p, single),) * 2 if p.HasField(single) else default


def need_4d(layer: Layer, shape: tuple) -> None:
    if len(shape) != 4:
        raise ShapeError(f"{layer.type} needs a 4-D bottom (N, C, H, W), got {fmt_shape(shape)}",
                         help=[f"Caffe's {layer.type} has no N-D form"])


@register
class Pooling(Layer):
    """Caffe Pooling: MAX (optional argmax top), AVE, STOCHASTIC (TEST only); ceil-and-clip windows."""

    type = "Pooling"
    param = "pooling_param"
    tops = (1, 2)
    runtime = ("caffe_pool2d",)

    def setup(self):
        p = self.p
        self.method = PoolingParameter.PoolMethod.Name(p.pool)
        self.ceil = self.round_ceil()
        kernel_given = any(p.HasField(f) for f in ("kernel_size", "kernel_h", "kernel_w"))
        if p.global_pooling and kernel_given:
            raise LayerError("global_pooling takes the whole plane as its kernel; kernel_size "
                             "cannot be given too", self.field("global_pooling"),
                             help=["remove kernel_size, or set global_pooling: false"])
        self.kernel = None if p.global_pooling else pool_hw(self, "kernel", "kernel_size", None)
        if not p.global_pooling and self.kernel is None:
            raise LayerError("kernel_size (or kernel_h and kernel_w) is required", self.field(),
                             help=["add `kernel_size: 2` to pooling_param, or `global_pooling: true`"])
        self.pad = pool_hw(self, "pad", "pad", (0, 0))
        self.stride = pool_hw(self, "stride", "stride", (1, 1))
        self.validate()
        # torch's pooling equals Caffe's for every input size when pad <= k/2, except that
        # torch drops a last window starting at or beyond the input even without padding
        self.plain = (self.method != "STOCHASTIC" and self.num_tops() == 1 and
                      (self.kernel is None or all(2 * p <= k and (p > 0 or s <= k) for k, s, p
                                                  in zip(self.kernel, self.stride, self.pad))))
        self.runtime = () if self.plain else ("caffe_pool2d",)

    def round_ceil(self) -> bool:
        """CEIL (Caffe's default) or FLOOR, from round_mode or the netspec ``ceil_mode`` dialect."""
        p = self.p
        ceil = p.round_mode == PoolingParameter.CEIL
        if "ceil_mode" in p.DESCRIPTOR.fields_by_name and p.HasField("ceil_mode"):
            if p.HasField("round_mode") and p.ceil_mode != ceil:
                raise LayerError(f"ceil_mode: {str(p.ceil_mode).lower()} contradicts round_mode: "
                                 f"{PoolingParameter.RoundMode.Name(p.round_mode)}",
                                 self.field("ceil_mode"), help=["keep only round_mode"])
            mode = "CEIL" if p.ceil_mode else "FLOOR"
            self.warnings.append(LayerError(
                f"`ceil_mode: {str(p.ceil_mode).lower()}` is a fork dialect, read as "
                f"`round_mode: {mode}`", self.field("ceil_mode"), code="W0501",
                help=[f"write `round_mode: {mode}` for BVLC Caffe"]))
            return p.ceil_mode
        return ceil

    def given(self, base: str, single: str) -> tuple:
        """The field path of whichever spelling of a geometry field the layer uses."""
        name = single if self.p.HasField(single) or not self.p.HasField(f"{base}_h") else f"{base}_h"
        return self.field(name)

    def validate(self) -> None:
        p, (kh, kw), (sh, sw), (ph, pw) = self.p, self.kernel or (1, 1), self.stride, self.pad
        if min(kh, kw) <= 0:
            raise LayerError(f"kernel size must be positive, got {kh}x{kw}",
                             self.given("kernel", "kernel_size"))
        if min(sh, sw) <= 0:
            raise LayerError(f"stride must be positive, got {sh}x{sw}", self.given("stride", "stride"))
        if p.global_pooling and (ph, pw, sh, sw) != (0, 0, 1, 1):
            raise LayerError("global_pooling needs pad 0 and stride 1", self.field("global_pooling"),
                             help=["remove pad and stride"])
        if (ph or pw) and self.method not in ("MAX", "AVE"):
            raise LayerError(f"padding is implemented only for MAX and AVE pooling, not {self.method}",
                             self.given("pad", "pad"), help=["remove pad"])
        if ph >= kh or pw >= kw:
            raise LayerError(f"pad {ph}x{pw} must be smaller than the kernel {kh}x{kw}",
                             self.given("pad", "pad"), help=["Caffe refuses pad >= kernel_size"])
        if self.num_tops() == 2 and self.method != "MAX":
            raise LayerError(f"only MAX pooling has a second top (the argmax mask), not {self.method}",
                             ("top", 1), help=["remove the second top"])
        if self.method == "STOCHASTIC" and self.phase != TEST:
            raise LayerError("STOCHASTIC pooling in TRAIN phase is GPU-only in Caffe and not supported",
                             self.field("pool"), help=["use MAX or AVE; at TEST phase STOCHASTIC is "
                                                       "a probability-weighted average and is supported"])

    def infer(self, shapes):
        x = shapes[0]
        need_4d(self, x)
        kernel = self.kernel or x[2:]
        out = []
        for axis, n, k, s, p in zip("HW", x[2:], kernel, self.stride, self.pad):
            o = caffe_pool_size(n, k, s, p, self.ceil)
            if o <= 0:
                raise ShapeError(f"the kernel {k} exceeds the padded input {n} + 2*{p} along {axis}; "
                                 "the pooled output would be empty", self.field("kernel_size"),
                                 help=["reduce kernel_size, or use round_mode: CEIL"])
            out.append(o)
        return [(x[0], x[1], *out)] * self.num_tops()

    def forward(self, bottoms, shapes):
        x = bottoms[0]
        if self.plain and self.kernel is None:
            # adaptive_max_pool2d, unlike amax, routes the gradient to the first maximum only
            if self.method == "MAX":
                return f"F.adaptive_max_pool2d({x}, 1)"
            return f"{x}.mean((2, 3), keepdim=True)"
        if self.plain:          # torch's stride defaults to the kernel: always written
            args = f"{x}, {_terse(self.kernel)}, {_terse(self.stride)}"
            args += (f", {_terse(self.pad)}" if any(self.pad) else "") + (", ceil_mode=True" if self.ceil else "")
            if self.method == "MAX":
                return f"F.max_pool2d({args})"
            return f"F.avg_pool2d({args}, count_include_pad=True)"       # Caffe averages over the pad too
        extra = ("" if self.ceil else ", ceil=False") + (", mask=True" if self.num_tops() == 2 else "")
        return f"caffe_pool2d({x}, {self.method!r}, {self.kernel}, {self.stride}, {self.pad}{extra})"


@register
class SPP(Layer):
    """Caffe spatial pyramid pooling: levels of 1, 2x2, 4x4, ... bins, flattened and concatenated."""

    type = "SPP"
    param = "spp_param"
    runtime = ("caffe_spp",)

    def setup(self):
        self.positive(self.p.pyramid_height, "pyramid_height")
        self.method = caffe_pb2.SPPParameter.PoolMethod.Name(self.p.pool)
        if self.method == "STOCHASTIC":
            raise LayerError("STOCHASTIC SPP is GPU-only in Caffe and not supported", self.field("pool"),
                             help=["use pool: MAX or pool: AVE"])

    def infer(self, shapes):
        x = shapes[0]
        need_4d(self, x)
        total = 0
        for level in range(self.p.pyramid_height):
            sizes = []
            for axis, n in zip("HW", x[2:]):
                k, p = caffe_spp_level(n, level)
                if p >= k:
                    raise ShapeError(f"pyramid level {level} ({2 ** level} bins) of a {axis} = {n} input "
                                     f"needs pad {p} >= kernel {k}, which Caffe's pooling refuses",
                                     self.field("pyramid_height"),
                                     help=["use a smaller pyramid_height or a larger input"])
                sizes.append(caffe_pool_size(n, k, k, p))
            total += sizes[0] * sizes[1]
        if self.p.pyramid_height == 1:
            return [(x[0], x[1], 1, 1)]
        return [(x[0], x[1] * total)]

    def forward(self, bottoms, shapes):
        return f"caffe_spp({bottoms[0]}, {self.p.pyramid_height}, {self.method!r})"


@register
class Crop(Layer):
    """Caffe Crop: bottom 0 cropped to bottom 1's shape from ``axis`` on, at ``offset``."""

    type = "Crop"
    param = "crop_param"
    bottoms = (2, 2)
    no_grad_bottoms = (1,)           # the reference blob only gives the shape

    def offsets(self, shapes) -> tuple[int, list[int]]:
        a, b = shapes
        if len(a) != len(b):
            raise ShapeError(f"Crop needs bottoms with the same number of axes, got {fmt_shape(a)} "
                             f"and {fmt_shape(b)}")
        axis = canonical_axis(self.p.axis, len(a), self, self.field("axis"))
        n, given = len(a) - axis, list(self.p.offset)
        if len(given) not in (0, 1, n):
            raise LayerError(f"{len(given)} offsets given; give 0, 1 or one per axis from "
                             f"axis {axis} on ({n})", self.field("offset", 0))
        offsets = given * n if len(given) == 1 else given or [0] * n
        for i, o in enumerate(offsets, axis):
            if a[i] - o < b[i]:
                raise ShapeError(f"cannot crop {b[i]} elements at offset {o} from axis {i} of size {a[i]} "
                                 f"({fmt_shape(a)} to {fmt_shape(b)})", self.field("offset"),
                                 help=[f"use an offset of at most {a[i] - b[i]}"])
        return axis, offsets

    def infer(self, shapes):
        axis, _ = self.offsets(shapes)
        return [tuple(shapes[0][:axis]) + tuple(shapes[1][axis:])]

    def forward(self, bottoms, shapes):
        axis, offsets = self.offsets(shapes)
        size = shapes[1][axis:]
        slices = [":"] * axis + [f"{o}:{o + n}" for o, n in zip(offsets, size)]
        return f"{bottoms[0]}[{', '.join(slices)}]"


@register
class LRN(Layer):
    """Caffe LRN: ACROSS_CHANNELS x*(k + alpha/size*sum x^2)^-beta,
    WITHIN_CHANNEL x*(1 + alpha*avg x^2)^-beta."""

    type = "LRN"
    param = "lrn_param"

    def setup(self):
        size = self.p.local_size
        if size <= 0 or size % 2 == 0:
            raise LayerError(f"local_size must be a positive odd number, got {size}",
                             self.field("local_size"), help=["Caffe's LRN only supports odd sizes"])

    def infer(self, shapes):
        need_4d(self, shapes[0])
        return [shapes[0]]

    def forward(self, bottoms, shapes):
        p, x = self.p, bottoms[0]
        if p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            # torch's window is Caffe's for odd sizes: (size-1)/2 zero channels before and after
            return f"F.local_response_norm({x}, {p.local_size}, {lit(p.alpha)}, {lit(p.beta)}, {lit(p.k)})"
        # Caffe builds WITHIN_CHANNEL from AVE pooling (divisor size^2, zero padding) and ignores k
        avg = f"F.avg_pool2d({x} * {x}, {p.local_size}, 1, {(p.local_size - 1) // 2})"
        return f"{x} * (1 + {lit(p.alpha)} * {avg}) ** {lit(-p.beta)}"


@register
class BatchNorm(Layer):
    """Caffe BatchNorm: normalise per channel; its three blobs are statistics buffers, never trained."""

    type = "BatchNorm"
    param = "batch_norm_param"
    blobs = ("mean", "variance", "scale_factor")
    runtime = ("CaffeBatchNorm",)

    def setup(self):
        for i, spec in enumerate(self.lp.param[:3]):
            if spec.lr_mult != 0:
                raise LayerError("BatchNorm's statistics cannot be trained: lr_mult must be 0",
                                 ("param", i, "lr_mult"), help=["set lr_mult: 0 or remove the param block"])
        p = self.p
        self.global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == TEST

    def learnable(self, i):
        return False

    def channels(self, shape) -> int:
        return shape[1] if len(shape) > 1 else 1

    def blob_shapes(self, shapes):
        c = self.channels(shapes[0])
        return [(c,), (c,), (1,)]

    def module(self, shapes):
        p = self.p
        return (f"CaffeBatchNorm({self.channels(shapes[0])}, use_global_stats={self.global_stats}, "
                f"moving_average_fraction={lit(p.moving_average_fraction)}, eps={lit(p.eps)})")

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({bottoms[0]})"


class _Broadcast(Layer):
    """Shared geometry of Scale and Bias: a blob covering axes [axis, axis + num_axes) of bottom 0,
    learned (one bottom) or given as bottom 1."""

    bottoms = (1, 2)

    def blob_axes(self, shapes) -> tuple[int, tuple]:
        x = shapes[0]
        axis = canonical_axis(self.p.axis, len(x), self, self.field("axis"))
        if len(shapes) == 2:
            blob = tuple(shapes[1])
        else:
            n = self.p.num_axes
            if n < -1 or (n > 0 and axis + n > len(x)):
                raise LayerError(f"num_axes {n} does not fit a {len(x)}-D bottom from axis {axis}",
                                 self.field("num_axes"), help=["use -1 (all remaining axes) or "
                                                              f"0 to {len(x) - axis}"])
            blob = tuple(x[axis:]) if n == -1 else tuple(x[axis:axis + n])
        axis = 0 if not blob else axis
        if tuple(x[axis:axis + len(blob)]) != blob:
            raise ShapeError(f"the {self.type.lower()} {fmt_shape(blob)} does not match axes "
                             f"{axis}.. of the bottom {fmt_shape(x)}", self.field("axis"),
                             help=["choose axis so that the second bottom's shape matches there"])
        return axis, blob

    def infer(self, shapes):
        self.blob_axes(shapes)
        return [shapes[0]]

    def expand(self, name: str, shapes) -> str:
        axis, blob = self.blob_axes(shapes)
        trailing = len(shapes[0]) - axis - len(blob)
        return f"{name}.reshape({tuple(blob) + (1,) * trailing})" if trailing and blob else name


@register
class Scale(_Broadcast):
    """Caffe Scale: x * scale (+ bias); the scale is a learned blob or bottom 1."""

    type = "Scale"
    param = "scale_param"
    runtime = ("CaffeScale",)

    def setup(self):
        self.check_filler("filler")
        self.check_filler("bias_filler")
        learned = () if len(self.lp.bottom) == 2 else ("weight",)
        self.blobs = learned + (("bias",) if self.p.bias_term else ())
        if not self.blobs:
            self.runtime = ()

    def blob_shapes(self, shapes):
        return [self.blob_axes(shapes)[1]] * len(self.blobs)

    def fillers(self):
        # Caffe's default scale filler is constant 1 (not FillerParameter's default 0)
        ones = caffe_pb2.FillerParameter(type="constant", value=1)
        scale = [self.p.filler if self.p.HasField("filler") else ones] if "weight" in self.blobs else []
        return scale + ([self.p.bias_filler] if self.p.bias_term else [])

    def module(self, shapes):
        if not self.blobs:
            return None
        axis, blob = self.blob_axes(shapes)
        learned = None if len(shapes) == 2 else blob
        return f"CaffeScale({learned}, {axis}, bias={self.p.bias_term}, bias_shape={blob})"

    def forward(self, bottoms, shapes):
        if self.blobs:
            return f"{self.mod()}({', '.join(bottoms)})"
        return f"{bottoms[0]} * {self.expand(bottoms[1], shapes)}"


@register
class Bias(_Broadcast):
    """Caffe Bias: x + bias; the bias is a learned blob or bottom 1."""

    type = "Bias"
    param = "bias_param"
    blobs = ("bias",)
    runtime = ("CaffeBias",)

    def setup(self):
        self.check_filler("filler")
        if len(self.lp.bottom) == 2:
            self.blobs, self.runtime = (), ()

    def blob_shapes(self, shapes):
        return [self.blob_axes(shapes)[1]] * len(self.blobs)

    def fillers(self):
        return [self.p.filler] * len(self.blobs)

    def module(self, shapes):
        if not self.blobs:
            return None
        axis, blob = self.blob_axes(shapes)
        return f"CaffeBias({blob}, {axis})"

    def forward(self, bottoms, shapes):
        if self.blobs:
            return f"{self.mod()}({bottoms[0]})"
        return f"{bottoms[0]} + {self.expand(bottoms[1], shapes)}"


@register
class MVN(Layer):
    """Caffe MVN: subtract the mean (per sample, or per sample and channel), divide by std + eps."""

    type = "MVN"
    param = "mvn_param"
    runtime = ("caffe_mvn",)

    def forward(self, bottoms, shapes):
        p = self.p
        return (f"caffe_mvn({bottoms[0]}, across_channels={p.across_channels}, "
                f"normalize_variance={p.normalize_variance}, eps={lit(p.eps)})")


@register
class Im2col(Layer):
    """Caffe Im2col: every convolution window as a column, (N, C*kh*kw, H', W'); the window
    geometry comes from ``convolution_param`` (kernel, stride, pad, dilation)."""

    type = "Im2col"
    param = "convolution_param"
    runtime = ("caffe_im2col",)

    def geometry(self, shape):
        axis, kernel, stride, pad, dilation = _ConvBase.geometry(self, shape)
        if axis != 1 or len(shape) != 4:
            raise ShapeError(f"Im2col supports (N, C, H, W) bottoms with the channel axis 1; got "
                             f"{fmt_shape(shape)} with axis {axis}",
                             help=["N-D im2col (force_nd_im2col, 3-D windows) is not implemented in netspec"])
        return kernel, stride, pad, dilation

    def infer(self, shapes):
        x = shapes[0]
        kernel, stride, pad, dilation = self.geometry(x)
        out = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1
               for n, k, s, p, d in zip(x[2:], kernel, stride, pad, dilation)]
        if min(out) < 1:
            raise ShapeError(f"the {kernel[0]}x{kernel[1]} window (dilation {dilation}) does not fit "
                             f"the padded {x[2]}x{x[3]} input", self.field("kernel_size"))
        return [(x[0], x[1] * kernel[0] * kernel[1], out[0], out[1])]

    def forward(self, bottoms, shapes):
        kernel, stride, pad, dilation = self.geometry(shapes[0])
        return f"caffe_im2col({bottoms[0]}, {kernel}, {stride}, {pad}, {dilation})"
