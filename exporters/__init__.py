"""Exporters: ONNX graphs per block / per branch and TensorRT engines (installed as edgeinf.exporters)."""
