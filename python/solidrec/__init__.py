"""solidrec: the SOLID recommender package (data preparation, models, training)."""

__version__ = "0.1.0"
