"""Text every wire format can carry: surrogates become U+FFFD, everything else is kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tomograph.text import unicode_text, utf8

#: Text with surrogates among other code points (st.text() alone leaves them out).
any_text = st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=40)


@given(any_text)
def test_unicode_text_is_always_encodable_and_keeps_real_text(text: str) -> None:
    cleaned = unicode_text(text)
    assert cleaned.encode() == utf8(text)
    assert len(cleaned) == len(text)
    for before, after in zip(text, cleaned, strict=True):
        assert after == (before if not "\ud800" <= before <= "\udfff" else "\ufffd")


def test_a_surrogate_pair_in_a_str_is_not_unicode_either() -> None:
    assert unicode_text("\ud83d\ude00") == "\ufffd\ufffd"
