"""archspec's version (also `archspec.__version__`; pyproject.toml holds the same number)."""

__version__ = "0.1.0"
