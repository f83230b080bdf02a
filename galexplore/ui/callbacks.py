"""Callback helpers of the page: errors shown instead of raised, document updates batched."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import panel as pn

from galexplore.ui.state import ExplorerState


@contextlib.contextmanager
def batched():
    """Hold the session's Bokeh document so that all model changes made inside are sent as
    one message and the document's model graph is recomputed once, not once per plot."""
    doc = pn.state.curdoc
    if doc is None:
        yield
        return
    with doc.models.freeze(), pn.io.hold(doc):
        yield


def guarded(state: ExplorerState, function: Callable) -> Callable:
    """Wrap a callback so that any exception is shown in the page and the session goes on;
    the document updates it causes are batched."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            with batched():
                return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- the page must survive every failure
            state.report(error)
            return None

    return wrapper
