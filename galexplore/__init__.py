"""galexplore: explore what machine-learning encoders learn about galaxies."""

from galexplore.errors import GalexploreError

__version__ = "0.1.0"
__all__ = ["GalexploreError", "__version__", "export_selection"]


def __getattr__(name: str):
    # imported on first use, so that `import galexplore` stays light (no pandas)
    if name == "export_selection":
        from galexplore.export import export_selection

        return export_selection
    raise AttributeError(f"module 'galexplore' has no attribute {name!r}")
