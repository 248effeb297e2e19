"""Text that shows exactly as written: in Streamlit's markdown elements (`plain`) and in Plotly
figures (`plotly_text`).

Streamlit's markdown elements (st.warning, st.info, st.caption) render markdown, so a name with
``_`` or ``*`` (a model, an objective, a file) would turn into emphasis and a ``<`` into markup.
`plain` escapes every markdown and HTML character.

Plotly renders a subset of HTML in every text it draws (titles, axis and tick labels, legend
entries, annotations, hover labels, point text): ``<br>``, ``<b>``, ``<i>``, ``<em>``,
``<sup>``, ``<sub>``, ``<span style>`` and ``<a href>``, a clickable link. It also fills
``%{...}`` in trace names, titles and hover templates from the figure's data. `plotly_text`
turns ``& < >`` and ``%`` into character references, which Plotly shows as the characters.
Every figure builder passes the names and texts it is given (prompts, responses, policies,
sources, categories, objectives, models, raters) through it, and keeps them out of hover
templates: per-point texts go in ``text`` / ``customdata``, per-trace ones in ``meta``, and the
template refers to them (``%{text}``, ``%{meta[0]}``).
"""

from __future__ import annotations

import html
import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def plain(text: object) -> str:
    """``text`` with every character markdown or HTML would act on backslash-escaped."""
    return _SPECIAL.sub(r"\\\1", str(text))


def plotly_text(text: object) -> str:
    """``text`` for a Plotly figure: ``&``, ``<``, ``>`` and ``%`` as character references,
    so Plotly shows them and reads no tag or ``%{...}`` variable in it."""
    return html.escape(str(text), quote=False).replace("%", "&#37;")
