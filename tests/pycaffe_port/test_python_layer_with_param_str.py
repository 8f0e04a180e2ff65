"""pycaffe's python/caffe/test/test_python_layer_with_param_str.py, ported to netspec.

The layer class and net file are Caffe's, unchanged; test bodies differ only where
netspec's ``Net`` differs from ``caffe.Net`` (marked ``# port:``).
"""
import unittest
import tempfile
import os

import torch

import netspec
from netspec import pycaffe as caffe          # port: netspec's caffe.Layer, TRAIN/TEST


class SimpleParamLayer(caffe.Layer):
    """A layer that just multiplies by the numeric value of its param string"""

    def setup(self, bottom, top):
        try:
            self.value = float(self.param_str)
        except ValueError:
            raise ValueError("Parameter string must be a legible float")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.value * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.value * top[0].diff


def python_param_net_file():
    with tempfile.NamedTemporaryFile(mode='w+', delete=False) as f:
        f.write("""name: 'pythonnet' force_backward: true
        input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }
        layer { type: 'Python' name: 'mul10' bottom: 'data' top: 'mul10'
          python_param { module: 'test_python_layer_with_param_str'
                layer: 'SimpleParamLayer' param_str: '10' } }
        layer { type: 'Python' name: 'mul2' bottom: 'mul10' top: 'mul2'
          python_param { module: 'test_python_layer_with_param_str'
                layer: 'SimpleParamLayer' param_str: '2' } }""")
        return f.name


@unittest.skipIf('Python' not in caffe.layer_type_list(),
    'Caffe built without Python layer support')
class TestLayerWithParam(unittest.TestCase):
    def setUp(self):
        net_file = python_param_net_file()
        self.net = netspec.Net(net_file, caffe.TRAIN)
        os.remove(net_file)

    def test_forward(self):
        x = 8
        self.net.forward(data=torch.full((10, 9, 8), x))     # port: inputs go to forward
        for y in self.net.blobs['mul2'].data.flatten():       # port: .flat -> .flatten()
            self.assertEqual(y, 2 * 10 * x)

    def test_backward(self):
        x = 7
        self.net.forward(data=torch.zeros(10, 9, 8))          # port: backward needs a forward
        self.net.backward({'mul2': torch.full((10, 9, 8), x)})    # port: the top diff
        for y in self.net.diffs['data'].flatten():
            self.assertEqual(y, 2 * 10 * x)
