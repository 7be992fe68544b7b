"""Training: recipes (`recipe.py`, static and validated like specs). Recipes are read by
`archspec inspect/report --recipe` for the trainable and frozen parameters of each phase."""
