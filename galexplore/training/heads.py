"""A small MLP head on a model's latent vectors: predict a catalogue column or a class.

The head is a scikit-learn multi-layer perceptron (ReLU hidden layers, Adam, seeded)
trained one epoch at a time on standardised latents, with the galaxies split into train
and held-out sets by `split_by_galaxy` (no galaxy has views on both sides). Regression
targets are standardised for training and reported in their own units; a classification
head predicts the probability of class 1. It is stored without pickle: the arrays in
``head.safetensors`` and everything else in ``head.json``, and predicts with a NumPy
forward pass of those arrays.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galexplore.errors import ModelError, ParameterError, TrainingError

HEAD_KIND = "mlp-head"
TASKS = ("regression", "classification")
WEIGHTS_FILE, CARD_FILE = "head.safetensors", "head.json"
#: Table column of a head's predictions (class for a classifier) and of a classifier's probability.
PRED_PREFIX, PROBA_PREFIX = "pred_head_", "proba_head_"
#: Lower limit on the standard deviation used to standardise an input or target.
_MIN_SCALE = 1e-12


def head_columns(target: str, task: str) -> list[str]:
    """Table columns a head on ``target`` adds: ``pred_head_<target>`` (+ ``proba_head_<target>``)."""
    return [PRED_PREFIX + target] + ([PROBA_PREFIX + target] if task == "classification" else [])


@dataclass
class HeadConfig:
    """What a head learns, from which latents, and how.

    Attributes
    ----------
    target : str
        Name of what is predicted (a catalogue column, or e.g. ``"marks"``); names the column.
    latents : ndarray, shape (n, d)
        Latent vectors of every row (rows with a non-finite entry are not used).
    values : ndarray, shape (n,)
        Regression: the target in its units. Classification: 1, 0, or NaN (unlabelled).
    galaxy_ids : ndarray, shape (n,)
        Galaxy of each row, for the split by galaxy.
    task : {"regression", "classification"}
    latent_names, target_unit, labels_from : descriptions kept in ``head.json``.
    hidden_layers : tuple of int
        Units of each hidden (ReLU) layer.
    epochs, batch_size, learning_rate, weight_decay : Adam settings (``weight_decay`` is
        scikit-learn's L2 penalty ``alpha``).
    seed : int
        Seeds the split, the initial weights and the shuffling.
    test_fraction : float
        Fraction of galaxies held out for the reported metrics.
    model_path : str or None
        Checkpoint whose latents these are (provenance).
    num_threads : int or None
        CPU threads of a background run; None: every core but one.
    """

    target: str
    latents: np.ndarray
    values: np.ndarray
    galaxy_ids: np.ndarray
    task: str = "regression"
    latent_names: list[str] = field(default_factory=list)
    target_unit: str = ""
    labels_from: str = ""
    hidden_layers: tuple[int, ...] = (32, 32)
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    test_fraction: float = 0.2
    model_path: str | None = None
    num_threads: int | None = None

    @property
    def kind(self) -> str:
        return HEAD_KIND

    def usable_rows(self) -> np.ndarray:
        """Rows with finite latents and a finite target (a label, for classification)."""
        z = np.asarray(self.latents, dtype=np.float64)
        return np.flatnonzero(np.isfinite(z).all(axis=1) & np.isfinite(np.asarray(self.values, dtype=np.float64)))

    def validate(self) -> None:
        """Raise `ParameterError` naming the first setting or input that is unusable."""
        if self.task not in TASKS:
            raise ParameterError(f"unknown head task {self.task!r}; choose one of {', '.join(TASKS)}")
        z = np.asarray(self.latents)
        if z.ndim != 2 or z.shape[1] < 1:
            raise ParameterError(f"latents must be an (n, d) array, got shape {z.shape}; load a model with latents")
        if len(self.values) != len(z) or len(self.galaxy_ids) != len(z):
            raise ParameterError(f"latents ({len(z)}), values ({len(self.values)}) and galaxy_ids "
                                 f"({len(self.galaxy_ids)}) must have one entry per row")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if not self.hidden_layers or any(int(h) < 1 for h in self.hidden_layers):
            raise ParameterError(f"hidden_layers must be positive layer sizes, got {self.hidden_layers}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ParameterError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ParameterError(f"weight_decay must be zero or positive, got {self.weight_decay}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ParameterError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        rows = self.usable_rows()
        if np.unique(np.asarray(self.galaxy_ids)[rows]).size < 4:
            raise ParameterError(f"only {rows.size} rows of fewer than 4 galaxies have finite latents and "
                                 f"{self.target!r}; the head needs more labelled galaxies")
        if self.task == "classification":
            labels = np.asarray(self.values, dtype=np.float64)[rows]
            if not np.isin(labels, (0.0, 1.0)).all():
                raise ParameterError("classification labels must be 0 or 1 (NaN: unlabelled)")
            counts = (int((labels == 0).sum()), int((labels == 1).sum()))
            if min(counts) < 2:
                raise ParameterError(f"a classification head needs at least 2 galaxies of each class; the labels "
                                     f"give {counts[0]} of class 0 and {counts[1]} of class 1. Change the "
                                     "threshold or mark more galaxies")


@dataclass
class MLPHead:
    """A trained head: standardisation, layer weights, and its held-out metrics.

    Attributes
    ----------
    target, task, target_unit : what it predicts.
    input_mean, input_scale : (d,) latent standardisation (training set).
    weights, biases : per layer, (n_in, n_out) and (n_out,); hidden layers use ReLU.
    target_mean, target_scale : regression output = raw * scale + mean (target units).
    metrics : held-out metrics (``r2``, ``rmse`` or ``balanced_accuracy``, ``confusion_matrix``) and sizes.
    info : provenance and settings (JSON-serialisable).
    """

    target: str
    task: str
    input_mean: np.ndarray
    input_scale: np.ndarray
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    target_mean: float = 0.0
    target_scale: float = 1.0
    target_unit: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return head_columns(self.target, self.task)

    def raw_output(self, latents: np.ndarray) -> np.ndarray:
        """The network's output before the final link (standardised target or logit); NaN rows stay NaN."""
        z = np.asarray(latents, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.input_mean):
            raise ParameterError(f"this head takes {len(self.input_mean)} latent dimensions, got an array of shape "
                                 f"{z.shape}; use the model the head was trained on")
        h = (z - self.input_mean) / self.input_scale
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if layer < len(self.weights) - 1:
                h = np.maximum(h, 0.0)  # NaN rows stay NaN
        return h[:, 0]

    def predict(self, latents: np.ndarray) -> np.ndarray:
        """Regression: the target (its units). Classification: the probability of class 1."""
        raw = self.raw_output(latents)
        if self.task == "regression":
            return raw * self.target_scale + self.target_mean
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-raw))

    def table_columns(self, latents: np.ndarray) -> dict[str, np.ndarray]:
        """The columns a session table gets: prediction, and for a classifier the class
        (-1 where a latent is not finite) and the probability."""
        out = self.predict(latents)
        if self.task == "regression":
            return {PRED_PREFIX + self.target: out}
        predicted = np.where(np.isfinite(out), (out >= 0.5).astype(np.int8), -1).astype(np.int8)
        return {PRED_PREFIX + self.target: predicted, PROBA_PREFIX + self.target: out}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``head.safetensors`` (arrays) and ``head.json`` into ``directory``; returns it."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"input_mean": self.input_mean, "input_scale": self.input_scale}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"weight_{i}"], arrays[f"bias_{i}"] = w, b
        save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()},
                  str(directory / WEIGHTS_FILE))
        card = {"format": "galexplore-mlp-head-1", "target": self.target, "task": self.task,
                "target_unit": self.target_unit, "target_mean": self.target_mean,
                "target_scale": self.target_scale, "n_layers": len(self.weights), "activation": "relu",
                "output": "identity (standardised target)" if self.task == "regression" else "logistic",
                "columns": self.columns, "metrics": self.metrics, "info": self.info}
        (directory / CARD_FILE).write_text(json.dumps(card, indent=2, allow_nan=False))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> MLPHead:
        """Read a head written by `save` (no pickle involved)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        if not (directory / CARD_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise ModelError(f"{directory} holds no MLP head ({CARD_FILE} + {WEIGHTS_FILE}); "
                             "choose a directory written by a head training job")
        card = json.loads((directory / CARD_FILE).read_text())
        arrays = load_file(str(directory / WEIGHTS_FILE))
        n = int(card["n_layers"])
        return cls(target=card["target"], task=card["task"], input_mean=arrays["input_mean"],
                   input_scale=arrays["input_scale"], weights=[arrays[f"weight_{i}"] for i in range(n)],
                   biases=[arrays[f"bias_{i}"] for i in range(n)], target_mean=float(card["target_mean"]),
                   target_scale=float(card["target_scale"]), target_unit=card.get("target_unit", ""),
                   metrics=card.get("metrics", {}), info=card.get("info", {}))


def _standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    return mean, np.where(scale > _MIN_SCALE, scale, 1.0)


def _loss(task: str, raw: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the standardised target, or the mean binary cross-entropy (nats)."""
    if task == "regression":
        return float(np.mean((raw - y) ** 2))
    # log(1 + exp(-s)) with s = raw for class 1 and -raw for class 0, computed stably
    signed = np.where(y == 1, raw, -raw)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def held_out_metrics(task: str, truth: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """Regression: R^2 (1 - SS_res / SS_tot about the held-out mean), RMSE and bias in the
    target's units. Classification (``prediction`` = probability of class 1, cut at 0.5):
    balanced accuracy (mean recall) and the row-normalised confusion matrix."""
    from galexplore.analysis.stats import confusion_matrix, mean_recall

    truth = np.asarray(truth, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    if task == "regression":
        residual = prediction - truth
        total = float(np.sum((truth - truth.mean()) ** 2))
        r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else float("nan")
        return {"r2": r2, "rmse": float(np.sqrt(np.mean(residual**2))), "bias": float(residual.mean()),
                "n": int(truth.size)}
    guess = (prediction >= 0.5).astype(int)
    labels = truth.astype(int)
    return {"balanced_accuracy": float(mean_recall(labels, guess, labels=[0, 1])),
            "confusion_matrix": np.asarray(confusion_matrix(labels, guess, normalize=True, labels=[0, 1])).tolist(),
            "n": int(truth.size), "n_per_class": [int((labels == 0).sum()), int((labels == 1).sum())]}


def fit_head(config: HeadConfig, callback: Callable[[dict[str, Any]], None] | None = None,
             stop_event: Any = None) -> MLPHead:
    """Train a head; ``callback`` gets an event per epoch like `galexplore.training.loops.train`'s.

    Parameters
    ----------
    config : HeadConfig
    callback : callable, optional
        Called after every epoch with ``{"epoch", "epochs", "train_loss", "val_loss",
        "best_val_loss", "learning_rate", "elapsed_s", "eta_s", "device", "partial"}``
        (losses: MSE of the standardised target, or binary cross-entropy).
    stop_event : threading.Event or multiprocessing.Event, optional
        When set, training ends after the current epoch (the head is kept as it is).

    Returns
    -------
    MLPHead, with its held-out metrics.

    Raises
    ------
    ParameterError
        Unusable settings or too few labelled galaxies.
    TrainingError
        The loss became NaN or infinite.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from galexplore.training.samplers import split_by_galaxy

    config.validate()
    rows = config.usable_rows()
    z = np.asarray(config.latents, dtype=np.float64)[rows]
    values = np.asarray(config.values, dtype=np.float64)[rows]
    train_index, test_index = split_by_galaxy(np.asarray(config.galaxy_ids)[rows], config.test_fraction,
                                              config.seed)
    input_mean, input_scale = _standardise(z[train_index])
    x = (z - input_mean) / input_scale
    if config.task == "regression":
        target_mean, target_scale = (float(v[0]) for v in _standardise(values[train_index, None]))
        y = (values - target_mean) / target_scale
        estimator_class = MLPRegressor
    else:
        if np.unique(values[train_index]).size < 2:
            raise ParameterError("the training galaxies hold only one class after the split by galaxy; "
                                 "label more galaxies of each class")
        target_mean, target_scale = 0.0, 1.0
        y = values.astype(int)
        estimator_class = MLPClassifier
    estimator = estimator_class(hidden_layer_sizes=tuple(int(h) for h in config.hidden_layers), activation="relu",
                                solver="adam", alpha=config.weight_decay,
                                batch_size=min(config.batch_size, len(train_index)),
                                learning_rate_init=config.learning_rate, random_state=config.seed, shuffle=True)
    head = MLPHead(target=config.target, task=config.task, input_mean=input_mean, input_scale=input_scale,
                   weights=[], biases=[], target_mean=target_mean, target_scale=target_scale,
                   target_unit=config.target_unit)

    def raw(index: np.ndarray) -> np.ndarray:
        head.weights, head.biases = list(estimator.coefs_), list(estimator.intercepts_)
        return head.raw_output(z[index])

    started = time.perf_counter()
    best = math.inf
    epochs_run, stopped = 0, False
    for epoch in range(1, config.epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if config.task == "classification":
                estimator.partial_fit(x[train_index], y[train_index], classes=[0, 1])
            else:
                estimator.partial_fit(x[train_index], y[train_index])
        train_loss = _loss(config.task, raw(train_index), y[train_index])
        val_loss = _loss(config.task, raw(test_index), y[test_index])
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise TrainingError(f"the head's loss became {train_loss} (training) / {val_loss} (held out) at epoch "
                                f"{epoch}; lower the learning rate (now {config.learning_rate:g})")
        best = min(best, val_loss)
        epochs_run = epoch
        stopped = stop_event is not None and stop_event.is_set()
        elapsed = time.perf_counter() - started
        if callback is not None:
            callback({"epoch": epoch, "epochs": config.epochs, "train_loss": train_loss, "val_loss": val_loss,
                      "best_val_loss": best, "learning_rate": config.learning_rate, "elapsed_s": elapsed,
                      "eta_s": elapsed / epoch * (config.epochs - epoch), "device": "cpu", "partial": False})
        if stopped:
            break
    head.weights, head.biases = list(estimator.coefs_), list(estimator.intercepts_)
    head.metrics = {**held_out_metrics(config.task, values[test_index], head.predict(z[test_index])),
                    "final_train_loss": train_loss, "final_val_loss": val_loss, "epochs_run": epochs_run,
                    "stopped_early": stopped,
                    "loss": "mse of the standardised target" if config.task == "regression"
                    else "binary cross-entropy (nats)"}
    galaxies = np.asarray(config.galaxy_ids)[rows]
    head.info = {"latent_names": list(config.latent_names), "labels_from": config.labels_from,
                 "model_path": config.model_path, "hidden_layers": [int(h) for h in config.hidden_layers],
                 "epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                 "weight_decay": config.weight_decay, "seed": config.seed, "test_fraction": config.test_fraction,
                 "split": "by galaxy", "n_train": int(len(train_index)), "n_test": int(len(test_index)),
                 "n_train_galaxies": int(np.unique(galaxies[train_index]).size),
                 "n_test_galaxies": int(np.unique(galaxies[test_index]).size),
                 "estimator": f"sklearn.neural_network.{estimator_class.__name__}",
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
    return head


def train_head(config: HeadConfig, out_dir: str | os.PathLike, callback: Callable[[dict[str, Any]], None] | None = None,
               stop_event: Any = None) -> Path:
    """`fit_head` and save the head into ``out_dir`` (which must not hold one yet); returns it."""
    out_dir = Path(out_dir)
    if (out_dir / CARD_FILE).exists():
        raise ParameterError(f"{out_dir} already holds a head; choose another output directory or delete it")
    return fit_head(config, callback=callback, stop_event=stop_event).save(out_dir)
