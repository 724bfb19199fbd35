"""report.dumps writes what json.dumps(obj, indent=1) writes, byte for byte."""

import json

from hypothesis import given
from hypothesis import strategies as st

from sim import report

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4)
                     | st.tuples(inner), max_leaves=30)


@given(_JSON)
def test_dumps_is_json_dumps_indent_1(obj):
    assert report.dumps(obj) == json.dumps(obj, indent=1)


def test_what_it_does_not_know_goes_to_json_dumps():
    class Name(str):
        pass
    for obj in ({1: "int key"}, {"k": (1, 2)}, [float("nan")], Name("x"), {"a": [True, None, -0.0, 1e300]}):
        assert report.dumps(obj) == json.dumps(obj, indent=1)
