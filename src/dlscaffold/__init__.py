"""dlscaffold: generate deep-learning research projects that train, resume and reproduce."""

__version__ = "0.1.0"
