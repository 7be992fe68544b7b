"""backends: what a Graph becomes. `keras` (one Keras layer per node, the `.keras` files
with their provenance), `onnx` (ONNX emitted from the IR, the passes that finish it, the
float16 and int8 variants, tf2onnx as a cross-check), `codegen` (readable Keras source).
Framework imports happen inside functions only."""
