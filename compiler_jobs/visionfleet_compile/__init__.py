"""The compile Job program: ONNX model -> the fastest accurate artifact for one node class."""
