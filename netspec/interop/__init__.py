"""Caffe interop: .caffemodel weights, legacy formats."""
