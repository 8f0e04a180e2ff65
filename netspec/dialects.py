"""Parameter blocks and layer types of well-known Caffe forks, for specific messages.

BVLC Caffe 1.0 is what netspec reads; a file written for a fork fails on the fork's
``*_param`` block or layer type.  Naming the fork (and what to do) beats a generic
"unknown field" with a misleading did-you-mean.
"""
from __future__ import annotations

_SSD = "SSD (weiliu89/caffe)"
_SEG = "DeepLab/PSPNet forks"
_FRCNN = "py-faster-rcnn's caffe-fast-rcnn"

# LayerParameter field -> (fork, the fork's layer type that uses it)
FORK_PARAMS = {
    "prior_box_param": (_SSD, "PriorBox"), "detection_output_param": (_SSD, "DetectionOutput"),
    "multibox_loss_param": (_SSD, "MultiBoxLoss"), "permute_param": (_SSD, "Permute"),
    "norm_param": (_SSD, "Normalize"), "annotated_data_param": (_SSD, "AnnotatedData"),
    "detection_evaluate_param": (_SSD, "DetectionEvaluate"), "video_data_param": (_SSD, "VideoData"),
    "roi_pooling_param": (_FRCNN, "ROIPooling"), "smooth_l1_loss_param": (_FRCNN, "SmoothL1Loss"),
    "proposal_param": (_FRCNN, "Proposal"), "interp_param": (_SEG, "Interp"),
    "upsample_param": ("SegNet (alexgkendall/caffe-segnet)", "Upsample"),
    "bn_param": ("SegNet and early BN forks", "BN"),
    "shuffle_channel_param": ("ShuffleNet forks", "ShuffleChannel"),
    "depthwise_convolution_param": ("MobileNet forks", "DepthwiseConvolution"),
    "yolo_param": ("YOLO forks", "Yolo"), "region_param": ("YOLO forks", "Region"),
    "reorg_param": ("YOLO forks", "Reorg"), "axpy_param": ("SENet forks", "Axpy"),
}

FORK_TYPES = {layer_type: fork for fork, layer_type in FORK_PARAMS.values()}


def fork_param_note(field: str) -> str | None:
    """A specific message for a fork's ``*_param`` block, or None for an unknown one."""
    if field not in FORK_PARAMS:
        return None
    fork, layer_type = FORK_PARAMS[field]
    return (f"'{field}' configures the {layer_type} layer of {fork}, which BVLC Caffe 1.0 and "
            "netspec do not have")


def fork_type_note(layer_type: str) -> str | None:
    """A specific note for a layer type that only a known fork defines."""
    fork = FORK_TYPES.get(layer_type)
    return None if fork is None else f"'{layer_type}' is a layer of {fork}, not of BVLC Caffe 1.0"
