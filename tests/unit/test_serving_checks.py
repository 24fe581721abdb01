"""Upload/query checks of the search service, without a model or Milvus."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vsearch.serving.search import QueryError, check_k, check_text, decode_query_image


def _png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_decodes_a_real_image_to_rgb():
    buf = io.BytesIO()
    Image.new("L", (10, 6), 128).save(buf, "JPEG")
    img = decode_query_image(buf.getvalue())
    assert img.mode == "RGB" and img.size == (10, 6)


@pytest.mark.parametrize(
    "raw,kwargs,status,message",
    [
        (b"", {}, 400, "empty upload"),
        (b"hello world", {}, 400, "not an image"),
        (_png()[:60], {}, 400, "corrupt image"),
        (_png(), {"max_bytes": 10}, 413, "more than 10 bytes"),
        (_png((100, 100)), {"max_pixels": 5000}, 413, "100x100 pixels"),
    ],
)
def test_bad_images(raw, kwargs, status, message):
    with pytest.raises(QueryError) as err:
        decode_query_image(raw, **kwargs)
    assert err.value.status == status and message in err.value.message


def test_k_and_text_limits():
    assert check_k("7") == 7 and check_k(1, max_k=1) == 1
    for bad, msg in (("0", "out of range"), ("101", "out of range"), ("x", "integer"), (None, "integer"), ("2.5", "integer")):
        with pytest.raises(QueryError, match=msg):
            check_k(bad)
    assert check_text("  in red ") == "in red" and check_text(None) == ""
    with pytest.raises(QueryError, match="text too long: 201"):
        check_text("x" * 201)
