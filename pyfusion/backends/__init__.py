"""Inference backends of the deploy nets: one module each (winograd, onnx, caffe)."""
