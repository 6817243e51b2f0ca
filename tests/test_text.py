"""Text every wire format can carry: surrogates become U+FFFD, everything else is kept."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from tomograph.text import unicode_text, utf8

#: Text with surrogates among other code points (st.text() alone leaves them out).
any_text = st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=40)


def _as_json_reads_it(text: str) -> str:
    """An independent reference: JSON escapes surrogates one by one and its decoder joins a high
    and a low one side by side into their character; what is left alone becomes U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", json.loads(json.dumps(text)))


@given(any_text)
def test_unicode_text_is_always_encodable_and_keeps_real_text(text: str) -> None:
    cleaned = unicode_text(text)
    assert cleaned.encode() == utf8(text)
    assert cleaned == _as_json_reads_it(text)


def test_a_surrogate_pair_in_a_str_becomes_its_character_as_json_would_read_it() -> None:
    assert unicode_text("\ud83d\ude00") == "\U0001f600"
    assert unicode_text("\ude00\ud83d") == "\ufffd\ufffd"  # the wrong order is no pair
