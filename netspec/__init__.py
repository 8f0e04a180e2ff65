"""netspec: a Caffe-style declarative network compiler on PyTorch."""
__version__ = "0.1.0"
