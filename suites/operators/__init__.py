"""Operator conformance suite: the ONNX backend node and model test cases."""
