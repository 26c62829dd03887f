"""Exports of nutq's models: ONNX graphs, TensorRT engines, Core ML packages (`nutq export`).

Beside `serve`: imports `models` and `engine`, and is never imported by the runtime.
"""
