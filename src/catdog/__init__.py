"""catdog: an MLOps platform for cats-vs-dogs image classification."""

__version__ = "0.1.0"
CLASS_NAMES = ("cat", "dog")
