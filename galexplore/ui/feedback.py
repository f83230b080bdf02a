"""Errors and long operations, shown in the page of the session they belong to.

Every callback Panel runs (widget changes, buttons, async and periodic callbacks) reports an
exception to `pn.config.exception_handler`; `install` points it at the `Messages` of the
session whose document raised it, so a failure is shown in that page and the session goes
on. Bokeh's own plot events are routed the same way by `on_event`. `busy` marks a component
as loading while an operation runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable

import panel as pn

from galexplore.ui.state import Messages

LOG = logging.getLogger("galexplore.ui")
_MESSAGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _handle(exception: BaseException) -> None:
    messages = _MESSAGES.get(pn.state.curdoc) if pn.state.curdoc is not None else None
    if messages is None:
        LOG.error("error outside a session: %s: %s", type(exception).__name__, exception)
        return
    messages.report(exception)


def install() -> None:
    """Route callback errors to the page of their session (idempotent)."""
    pn.config.exception_handler = _handle


def closed_page_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """An asyncio exception handler that drops the errors of writes to a page that has closed.

    Panel sends some updates as tasks that nobody awaits; when their browser page closes
    meanwhile, Tornado fails them with ``WebSocketClosedError`` and asyncio logs "Task
    exception was never retrieved" with a traceback, for nothing the server could do.
    Every other error goes to the loop's default handler.
    """
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    if isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError)):
        LOG.debug("a page closed while the server wrote to it")
        return
    loop.default_exception_handler(context)


def quiet_closed_pages() -> None:
    """Install `closed_page_handler` on the running event loop (the server's, while a session
    is built); nothing outside a running loop."""
    try:
        asyncio.get_running_loop().set_exception_handler(closed_page_handler)
    except RuntimeError:
        pass


def register(messages: Messages) -> None:
    """Show the errors of the session being built in ``messages``."""
    if pn.state.curdoc is not None:
        _MESSAGES[pn.state.curdoc] = messages


def on_event(figure, event, callback: Callable, messages: Messages) -> None:
    """``figure.on_event(event, callback)``, with an exception shown in ``messages``."""
    def guarded(event_object):
        try:
            callback(event_object)
        except Exception as error:  # noqa: BLE001 -- the page must survive every failure
            messages.report(error)

    figure.on_event(event, guarded)


def on_document(model, change: Callable[[], None]) -> None:
    """Make ``change`` (edits of Bokeh models) under the lock of ``model``'s document: on the
    next tick of its session (the pattern Bokeh prescribes for async callbacks and other
    threads), or at once when the model is not in a served document."""
    document = model.document
    if document is None or document.session_context is None:
        change()
    else:
        document.add_next_tick_callback(change)


def in_session(change: Callable[[], None]):
    """Run ``change`` (edits of widgets and panes) under the lock of the current session's
    document, on its next tick, and return an awaitable of its end.

    An async callback that edits the page after an ``await`` can race the websocket writes of
    updates scheduled meanwhile (a newly rendered map, say), and Panel may then never send the
    edits; under the lock, Bokeh sends them with the next patch.
    """
    document = pn.state.curdoc
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    if document is None or document.session_context is None:
        change()
        done.set_result(None)
        return done

    def run() -> None:
        try:
            change()
        except BaseException as error:  # noqa: BLE001 -- handed to the awaiting callback
            done.set_exception(error)
        else:
            done.set_result(None)

    document.add_next_tick_callback(run)
    return done


@contextlib.contextmanager
def busy(*components):
    """Show a loading spinner over ``components`` while the block runs."""
    for component in components:
        component.loading = True
    try:
        yield
    finally:
        for component in components:
            component.loading = False


def rule(width: int | None = None) -> pn.viewable.Viewable:
    """A thin horizontal line between groups of widgets (Panel's Divider fetches its style
    sheet from a CDN; this needs nothing from outside)."""
    return pn.Spacer(height=1, width=width, styles={"border-top": "1px solid #d0d0d0"}, margin=(8, 5),
                     sizing_mode=None if width else "stretch_width")
