"""ONNX from the graph IR: `via_ir` walks the Graph (or a Keras model's layers) and `ops`
emits each primitive's nodes with the model's weights; `passes` finish the model (names,
metadata, checks); `variants` make float16 and int8 files; `via_tf2onnx` converts through
TensorFlow as a cross-check. onnx / onnxruntime are imported inside functions."""
