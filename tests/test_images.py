"""Intake: hostile and awkward files are refused or normalised, and nothing odd is stored."""
import io
import random

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_app
from tests.pictures import encode, jpeg, tinted
from webapp.core import images


def rgb(w=40, h=24, colour=(10, 200, 30)):
    im = Image.new("RGB", (w, h), colour)
    im.putpixel((0, 0), (255, 0, 0))  # a marker to check orientation
    return im


def noise(w, h):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8))


def gif_with_frames(n):
    frames = [Image.new("P", (2, 2), i % 2) for i in range(n)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], optimize=False)


BAD = [
    (b"", "empty"),
    (jpeg(noise(200, 200))[:3000], "truncated"),
    (b"just some text, named cat.jpg by someone", "not an image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>', "not an image"),
    (b"<!doctype html><html><body>404 Not Found</body></html>", "not an image"),
]


@pytest.mark.parametrize("data, reason", BAD,
                         ids=["empty", "truncated-jpeg", "text", "svg", "html"])
def test_bad_inputs_are_refused_with_a_reason(data, reason):
    with pytest.raises(images.ImageRejected, match=reason):
        images.intake(data)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (6000, 6000)), "PNG")  # 36 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(images.ImageRejected, match="megapixels"):
        images.intake(bomb)


def test_pixel_cap_is_settable():
    data = jpeg(rgb(100, 100))
    images.intake(data, max_pixels=10_000)
    with pytest.raises(images.ImageRejected, match="limit"):
        images.intake(data, max_pixels=9_999)


def test_plain_jpeg_is_stored_byte_for_byte():
    data = jpeg(rgb())
    got = images.intake(data)
    assert (got.format, got.ext, got.normalised, got.data) == ("JPEG", "jpg", False, data)
    assert got.image.mode == "RGB" and got.image.size == (40, 24)


def test_extension_comes_from_the_content_not_the_name():
    got = images.intake(encode(rgb(), "PNG"))  # whatever the user named it
    assert (got.format, got.ext) == ("PNG", "png")


def test_exif_rotated_jpeg_is_stored_upright():
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6  # rotate 90° clockwise to display
    got = images.intake(jpeg(rgb(40, 24), exif=exif))
    assert got.normalised and got.ext == "png"
    assert got.image.size == (24, 40)
    stored = Image.open(io.BytesIO(got.data))
    assert stored.size == (24, 40) and stored.getexif().get(images.ORIENTATION_TAG) in (None, 1)


@pytest.mark.parametrize("make", [
    lambda: encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"),
    lambda: encode(Image.fromarray(np.full((16, 16), 40000, np.uint16)), "PNG"),
    lambda: encode(Image.new("RGBA", (16, 16), (255, 0, 0, 0)), "PNG"),
    lambda: encode(Image.new("P", (16, 16), 3), "PNG"),
], ids=["cmyk", "16-bit", "rgba", "palette"])
def test_awkward_modes_are_normalised_to_rgb_png(make):
    got = images.intake(make())
    assert got.normalised and got.ext == "png"
    stored = Image.open(io.BytesIO(got.data))
    assert stored.mode == "RGB"
    # What plain fastai sees from the stored file is what serving sees from the upload.
    assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(got.image))


def test_sixteen_bit_is_scaled_not_clipped():
    got = images.intake(encode(Image.fromarray(np.full((4, 4), 40000, np.uint16)), "PNG"))
    assert got.image.getpixel((0, 0)) == (156, 156, 156)  # 40000 >> 8


def test_transparent_pixels_become_white():
    got = images.intake(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"))
    assert got.image.getpixel((0, 0)) == (255, 255, 255)


def test_gif_with_ten_thousand_frames_keeps_the_first():
    got = images.intake(gif_with_frames(10_000))
    assert got.format == "GIF" and got.ext == "png" and got.image.size == (2, 2)
    assert got.image.getpixel((0, 0)) == (0, 0, 0)


def exif_orientation(value):
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = value
    return exif.tobytes()


def heic(im, orientation=None, **kw):
    """Return an iPhone-like HEIC: the pixels as taken, and how to turn them upright."""
    if orientation is not None:
        kw["exif"] = exif_orientation(orientation)  # the plugin writes an irot box, as iPhones do
    return encode(im, "HEIF", **kw)


def marked(w, h):
    """A green picture with a red block in its top-left corner, big enough to survive HEVC."""
    im = Image.new("RGB", (w, h), (10, 200, 30))
    im.paste((255, 0, 0), (0, 0, 8, 8))
    return im


def close(a, b, tolerance=8):
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_an_iphone_heic_is_stored_as_png_that_plain_pillow_reads():
    got = images.intake(heic(marked(40, 24)))
    assert (got.format, got.ext, got.normalised) == ("HEIF", "png", True)
    assert got.image.mode == "RGB" and got.image.size == (40, 24)
    assert close(got.image.getpixel((20, 12)), (10, 200, 30))
    assert close(got.image.getpixel((2, 2)), (255, 0, 0), tolerance=40)  # chroma is subsampled
    stored = Image.open(io.BytesIO(got.data), formats=["PNG"])
    assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(got.image))


def upright_marker(width):
    """Taken sideways (orientation 6), the top-left marker ends up top-right once upright."""
    return (width - 3, 2)


@pytest.mark.parametrize("fmt, encode_it", [
    ("HEIF", lambda im: heic(im, orientation=6, quality=-1)),
    pytest.param("AVIF", lambda im: encode(im, "AVIF", exif=exif_orientation(6), quality=100),
                 marks=pytest.mark.skipif("AVIF" not in images.FORMATS,
                                          reason="this Pillow has no AVIF")),
], ids=["heic", "avif"])
def test_a_sideways_phone_picture_is_turned_upright_exactly_once(fmt, encode_it):
    got = images.intake(encode_it(marked(60, 40)))
    assert got.format == fmt and got.ext == "png"
    assert got.image.size == (40, 60)  # twice, or never, would leave it 60 wide
    assert close(got.image.getpixel(upright_marker(40)), (255, 0, 0), tolerance=40)
    assert close(got.image.getpixel((2, 2)), (10, 200, 30), tolerance=40)
    stored = Image.open(io.BytesIO(got.data), formats=["PNG"])
    assert stored.size == (40, 60) and stored.getexif().get(images.ORIENTATION_TAG) in (None, 1)


def test_serving_decodes_a_heic_upright_in_rgb():
    im = images.decode(heic(marked(60, 40), orientation=6))
    assert im.mode == "RGB" and im.size == (40, 60)
    assert close(im.getpixel(upright_marker(40)), (255, 0, 0), tolerance=40)


def test_a_heic_bomb_is_refused_before_decoding():
    bomb = heic(Image.new("RGB", (6000, 6000)), quality=10)  # 36 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(images.ImageRejected, match="megapixels"):
        images.intake(bomb)
    with pytest.raises(images.ImageRejected, match="limit"):
        images.decode(heic(rgb(100, 100)), max_pixels=9_999)


def test_the_refusal_names_heic_among_the_accepted_formats():
    with pytest.raises(images.ImageRejected, match="HEIC"):
        images.intake(b"not a picture at all")


def test_the_api_classifies_a_heic_from_a_phone(trained_dir):
    client = make_app(trained_dir[0], LOAD_MODEL=True).test_client()
    red = heic(tinted("red", random.Random(21), 48), orientation=6)
    r = client.post("/api/classify", data={"file": (io.BytesIO(red), "IMG_0001.HEIC")})
    assert r.status_code == 200 and r.get_json()["predictions"][0][0] == "red"
