"""Training: `recipe.py` (the recipe schema and loader, freeze rules and their static
counts per phase), `data.py` (readers and tf.data pipelines), `loop.py` (`archspec train`,
the run directory, resume), `callbacks.py` (per-epoch history, checkpoint, best.keras) and
`evaluate.py` (`archspec evaluate` and `predict`). Only recipe.py is imported by the static
commands (`inspect/report --recipe`); the rest imports TensorFlow when it runs."""
