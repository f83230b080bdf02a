"""Errors a user can cause. Every message says what was wrong and what to do about it."""


class GalexploreError(Exception):
    """Base class of all user-facing errors; the CLI and the app show the message and carry on."""


class DatasetError(GalexploreError):
    """A dataset directory is missing, incomplete, corrupt or inconsistent."""


class FitsError(GalexploreError):
    """A FITS file cannot be read as a velocity/moment map or cube."""


class ColumnError(GalexploreError, KeyError):
    """A catalogue or embedding column that does not exist was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelError(GalexploreError):
    """A checkpoint cannot be loaded, or does not fit the dataset it is applied to."""


class ParameterError(GalexploreError, ValueError):
    """A parameter (of the mock generator, a projection, a training run, ...) is out of range."""


class SelectionError(GalexploreError):
    """A selection is empty or does not refer to rows of the current table."""


class TrainingError(GalexploreError):
    """A training run failed (bad hyperparameters, NaN loss, out of memory)."""
