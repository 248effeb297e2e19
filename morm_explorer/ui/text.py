"""Plain text for Streamlit's markdown elements (st.warning, st.info, st.caption).

Those elements render markdown, so a name with ``_`` or ``*`` (a model, an objective, a file)
would turn into emphasis and a ``<`` into markup. `plain` escapes every markdown and HTML
character, so the text shows exactly as written.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def plain(text: object) -> str:
    """``text`` with every character markdown or HTML would act on backslash-escaped."""
    return _SPECIAL.sub(r"\\\1", str(text))
