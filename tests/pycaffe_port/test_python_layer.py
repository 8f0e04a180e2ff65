"""pycaffe's python/caffe/test/test_python_layer.py, ported to netspec.

The layer classes and net files are Caffe's, unchanged: the nets load these classes
through ``python_param { module: 'test_python_layer' }`` exactly as under Caffe.  Test
bodies differ only where netspec's ``Net`` differs from ``caffe.Net`` (each marked
``# port:``): blobs are torch tensors, inputs are passed to ``forward``, top diffs to
``backward``, parameters live in ``net.params``, and weights reload through ``weights=``.
"""
import unittest
import tempfile
import os

import torch

import netspec
from netspec import pycaffe as caffe          # port: netspec's caffe.Layer, TRAIN/TEST
from netspec.diagnostics import NetspecError


class SimpleLayer(caffe.Layer):
    """A layer that just multiplies by ten"""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 10 * top[0].diff


class ExceptionLayer(caffe.Layer):
    """A layer for checking exceptions from Python"""

    def setup(self, bottom, top):
        raise RuntimeError

class ParameterLayer(caffe.Layer):
    """A layer that just multiplies by ten"""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] = 1

class PhaseLayer(caffe.Layer):
    """A layer for checking attribute `phase`"""

    def setup(self, bottom, top):
        pass

    def reshape(self, bootom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase

def python_net_file():
    with tempfile.NamedTemporaryFile(mode='w+', delete=False) as f:
        f.write("""name: 'pythonnet' force_backward: true
        input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }
        layer { type: 'Python' name: 'one' bottom: 'data' top: 'one'
          python_param { module: 'test_python_layer' layer: 'SimpleLayer' } }
        layer { type: 'Python' name: 'two' bottom: 'one' top: 'two'
          python_param { module: 'test_python_layer' layer: 'SimpleLayer' } }
        layer { type: 'Python' name: 'three' bottom: 'two' top: 'three'
          python_param { module: 'test_python_layer' layer: 'SimpleLayer' } }""")
        return f.name


def exception_net_file():
    with tempfile.NamedTemporaryFile(mode='w+', delete=False) as f:
        f.write("""name: 'pythonnet' force_backward: true
        input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }
        layer { type: 'Python' name: 'layer' bottom: 'data' top: 'top'
          python_param { module: 'test_python_layer' layer: 'ExceptionLayer' } }
          """)
        return f.name


def parameter_net_file():
    with tempfile.NamedTemporaryFile(mode='w+', delete=False) as f:
        f.write("""name: 'pythonnet' force_backward: true
        input: 'data' input_shape { dim: 10 dim: 9 dim: 8 }
        layer { type: 'Python' name: 'layer' bottom: 'data' top: 'top'
          python_param { module: 'test_python_layer' layer: 'ParameterLayer' } }
          """)
        return f.name

def phase_net_file():
    with tempfile.NamedTemporaryFile(mode='w+', delete=False) as f:
        f.write("""name: 'pythonnet' force_backward: true
        layer { type: 'Python' name: 'layer' top: 'phase'
          python_param { module: 'test_python_layer' layer: 'PhaseLayer' } }
          """)
        return f.name


@unittest.skipIf('Python' not in caffe.layer_type_list(),
    'Caffe built without Python layer support')
class TestPythonLayer(unittest.TestCase):
    def setUp(self):
        net_file = python_net_file()
        self.net = netspec.Net(net_file, caffe.TRAIN)
        os.remove(net_file)

    def test_forward(self):
        x = 8
        self.net.forward(data=torch.full((10, 9, 8), x))     # port: inputs go to forward
        for y in self.net.blobs['three'].data.flatten():      # port: .flat -> .flatten()
            self.assertEqual(y, 10**3 * x)

    def test_backward(self):
        x = 7
        self.net.forward(data=torch.zeros(10, 9, 8))          # port: backward needs a forward
        self.net.backward({'three': torch.full((10, 9, 8), x)})   # port: the top diff
        for y in self.net.diffs['data'].flatten():
            self.assertEqual(y, 10**3 * x)

    def test_reshape(self):
        s = 4
        self.net.forward(data=torch.zeros(s, s, s, s))        # port: a new input shape
        for blob in self.net.blobs.values():               # port: six.itervalues
            for d in blob.data.shape:
                self.assertEqual(s, d)

    def test_exception(self):
        net_file = exception_net_file()
        # port: a failing setup is a diagnostic on the layer that names the exception
        with self.assertRaises(NetspecError) as e:
            netspec.Net(net_file, caffe.TEST)
        self.assertIn("raised RuntimeError in setup", str(e.exception))
        os.remove(net_file)

    def test_parameter(self):
        net_file = parameter_net_file()
        net = netspec.Net(net_file, caffe.TRAIN)
        # Test forward and backward
        net.forward(data=torch.zeros(10, 9, 8))               # port: inputs, top diffs
        net.backward({'top': torch.zeros(10, 9, 8)})
        blob = net.params['layer'][0]                         # port: layer.blobs[0]
        self.assertEqual(blob.data[0], 0)
        self.assertEqual(blob.grad[0], 1)
        blob.data[0] += blob.grad[0]
        self.assertEqual(blob.data[0], 1)

        # Test saving and loading
        h, caffemodel_file = tempfile.mkstemp()
        os.close(h)
        net.save(caffemodel_file)
        blob.data[0] = -1
        self.assertEqual(blob.data[0], -1)
        net2 = netspec.Net(net_file, caffe.TRAIN, weights=caffemodel_file)   # port: copy_from
        self.assertEqual(net2.params['layer'][0].data[0], 1)
        os.remove(caffemodel_file)

        # port: share_with has no netspec counterpart; the layer reads its blob from the
        # parameter, so what a solver writes there is what the layer sees
        net2.params['layer'][0].data[0] = 5
        net2.forward(data=torch.zeros(10, 9, 8))
        layer = net2.compiled.module.layer.layer
        self.assertEqual(layer.blobs[0].data[0], 5)

        os.remove(net_file)

    def test_phase(self):
        net_file = phase_net_file()
        for phase in caffe.TRAIN, caffe.TEST:
            net = netspec.Net(net_file, phase)
            self.assertEqual(net.forward()['phase'], phase)
