"""The torch-free serving runtime: preprocessing from a spec and an ONNX Runtime session."""
