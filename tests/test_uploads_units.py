"""Upload rules that need no database: names, types, images, serving, the binary header."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chat import protocol, uploads
from chat.exceptions import Invalid, UploadFailed
from chat.models import Attachment


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../x.html", "x.html"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ("a\x00b\x1f\x7fc.txt", "abc.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("  .hidden  ", "hidden"),
        ("line\u2028break.txt", "linebreak.txt"),
    ],
)
def test_safe_name(raw, expected):
    assert uploads.safe_name(raw) == expected


def test_safe_name_caps_the_length_and_keeps_the_extension():
    name = uploads.safe_name("a" * 1000 + ".pdf")
    assert len(name) == uploads.MAX_NAME_CHARS and name.endswith(".pdf")


@pytest.mark.parametrize("raw", ["", "..", "/", "dir/", "\x00\x01"])
def test_safe_name_refuses_names_of_nothing(raw):
    with pytest.raises(Invalid):
        uploads.safe_name(raw)


def test_a_real_20000_square_png_is_refused(tmp_path):
    """The same through Pillow's own writer (mode "1" compresses 400 million pixels to KBs)."""
    path = tmp_path / "big.png"
    Image.new("1", (20_000, 20_000)).save(path, format="PNG")
    assert path.stat().st_size < 200_000
    with pytest.raises(UploadFailed):
        uploads.inspect_image(path, uploads.detect_type(path))


def test_over_the_pixel_setting_is_refused_below_pillows_own_limit(tmp_path, settings):
    settings.CHAT_UPLOAD_MAX_IMAGE_PIXELS = 100 * 100
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes(101, 100))
    with pytest.raises(UploadFailed):
        uploads.inspect_image(path, "image/png")


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"GIF89a" + b"\0" * 40, "image/gif"),
        (b"%PDF-1.7\n%\xe2\xe3\n", "application/pdf"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml"),
        (b"just words\n", "text/plain"),
        (b"\x00\x01\x02\xff" * 10, "application/octet-stream"),
    ],
)
def test_type_comes_from_the_bytes(tmp_path, data, mime):
    path = tmp_path / "file.png"  # the name claims PNG; it is never consulted
    path.write_bytes(data)
    assert uploads.detect_type(path) == mime


def test_only_verified_raster_images_are_inline():
    def serving(mime, width):
        return uploads.serving_for(Attachment(name="f", mime=mime, width=width, file="attachments/f.bin"))

    assert serving("image/png", 10).inline
    for mime in ("image/svg+xml", "text/html", "application/xml", "text/javascript", "application/pdf"):
        assert not serving(mime, None).inline
        assert serving(mime, None).content_type == "application/octet-stream"
    assert not serving("image/png", None).inline  # Pillow could not read it


def test_binary_chunk_header_round_trip():
    frame = protocol.binary_chunk_header("0f8c2a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f", 258) + b"\x00\xffdata"
    request = protocol.parse_binary_chunk(frame)
    assert request.upload_id == "0f8c2a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"
    assert request.index == 258 and request.data == b"\x00\xffdata"
    assert request.context.request_type == "file_chunk" and request.context.upload_id == request.upload_id


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01",
        b"\x02\x01a\x00\x00\x00\x00",
        b"\x01\x05ab",
        b"\x01\x00\x00\x00\x00\x00",
        b"\x01\x01\xff\x00\x00\x00\x00",
    ],
)
def test_bad_binary_headers_are_invalid(frame):
    with pytest.raises(protocol.FrameError) as caught:
        protocol.parse_binary_chunk(frame)
    assert caught.value.code == "invalid" and caught.value.context.request_type == "file_chunk"
