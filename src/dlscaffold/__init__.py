"""dlscaffold: generate deep-learning research projects that train, resume and reproduce."""

__version__ = "0.3.0"
