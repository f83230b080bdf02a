"""User-controlled text in Markdown panes: shown literally, never interpreted as HTML or Markdown.

Names from model cards, FITS headers, file names, catalogue columns and error messages can
hold anything, including ``<script>`` or ``<img onerror=...>``. Panel's Markdown panes
render raw HTML, so every such string goes through `literal` before it is interpolated.
"""

from __future__ import annotations

import re

#: ASCII punctuation that CommonMark lets a backslash escape, less the three HTML
#: characters, which become entities instead (a backslash before an entity would show it).
_MARKDOWN_PUNCTUATION = re.compile(r"([!\"#$%'()*+,\-./:;=?@\[\\\]^_`{|}~])")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: Control characters (C0 except tab, DEL, C1) and Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def literal(text: object, max_length: int = 2000) -> str:
    """``text`` as Markdown source that renders exactly as the characters of ``text``.

    HTML special characters become entities, Markdown punctuation is backslash-escaped,
    control characters are dropped, line breaks become spaces (so a value cannot start a
    heading or a table row), and the result is cut at ``max_length`` characters of input.

    Parameters
    ----------
    text : any object; its ``str()`` is shown.
    max_length : longest input shown; longer text ends with an ellipsis.

    Returns
    -------
    str
    """
    text = str(text)
    if len(text) > max_length:
        text = text[:max_length] + "…"
    text = _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return "".join(_HTML_ENTITIES.get(ch, ch) for ch in text)
