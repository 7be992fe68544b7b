"""ir: the lowered network. `graph` (primitive nodes with their shapes, parameters and
MACs), `lower` (the driver that runs each block family's lowering and injects stochastic
depth and names), `pipeline` (spec -> resolved -> Graph, and its summary: the one
pipeline every later layer uses). Never imports Keras or TensorFlow."""
