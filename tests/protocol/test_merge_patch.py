from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.merge_patch import merge_one_level


def test_null_deletes_and_values_replace() -> None:
    assert merge_one_level({"a": 1, "b": {"x": 1}}, {"a": None, "b": {"y": 2}, "c": 3}) == {"b": {"y": 2}, "c": 3}
    assert merge_one_level(None, {"a": None}) == {}


@given(st.dictionaries(st.text(max_size=3), st.integers()), st.dictionaries(st.text(max_size=3),
       st.one_of(st.none(), st.integers())))
def test_patch_then_same_patch_is_idempotent(base: dict[str, int], patch: dict[str, int | None]) -> None:
    once = merge_one_level(base, patch)
    assert merge_one_level(once, patch) == once
    assert all(k not in once for k, v in patch.items() if v is None)
