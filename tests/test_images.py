"""Intake: hostile and awkward files are refused or normalised, and nothing odd is stored."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.pictures import encode, jpeg
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
