"""galexplore: explore what machine-learning encoders learn about galaxies."""

from galexplore.errors import GalexploreError

__version__ = "0.1.0"
__all__ = ["GalexploreError", "__version__"]
