"""Image preprocessing variants, end to end over HTTP.

The models here serve their own input back (``pixels``), so what the server's
preprocessing made can be compared with a NumPy/Pillow reference computed in the test.
The images are 16x12, the models' own size, unless a test is about resizing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from images import bands, encode, image, jpeg
from scorepack import PreprocessConfig
from scorepack.preprocess import PRESETS
from serving_helpers import scoring_config, serving, tf_backend

pytest.importorskip("tensorflow")

H, W = 12, 16


def served_pixels(
    path: Path, body: bytes, content_type: str | None = None, **preprocess: Any
) -> np.ndarray:
    """Serve the identity model at ``path`` with these settings; the row it was given."""
    return served_pixels_and_info(path, body, content_type, **preprocess)[0]


def served_pixels_and_info(
    path: Path, body: bytes, content_type: str | None = None, **preprocess: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`served_pixels`, and what ``GET /info`` said about the model."""
    config = scoring_config(preprocess=PreprocessConfig(**preprocess), warmup=False)
    with serving(tf_backend(path), config) as served:
        response = served.score(body, content_type)
        assert response.status_code == 200, response.text
        info = served.client.get("/info").json()
    pixels = np.asarray(response.json()["outputs"]["pixels"], dtype=np.float32)
    assert pixels.shape[0] == 1
    return pixels[0], info


def decoded(body: bytes, mode: str = "RGB") -> np.ndarray:
    """Pillow's decode of ``body`` in ``mode``, as float32 HWC."""
    with Image.open(io.BytesIO(body)) as img:
        pixels = np.asarray(img.convert(mode), dtype=np.float32)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def normalised(pixels: np.ndarray, scale: float, mean: Any, std: Any) -> np.ndarray:
    return (pixels * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def test_raw_png_reaches_the_model_unchanged(identity_path: Path) -> None:
    img = image(W, H, seed=3)
    got, info = served_pixels_and_info(identity_path, encode(img, "PNG"), "image/png")
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, np.asarray(img, np.float32))
    assert info["preprocess"]["layout"] == "NHWC"


def test_jpeg_matches_pillows_decode(identity_path: Path) -> None:
    body = jpeg(W, H, seed=4)
    # sniffed: no content type at all
    np.testing.assert_array_equal(served_pixels(identity_path, body), decoded(body))


def test_bgr_reverses_the_channels(identity_path: Path) -> None:
    img = image(W, H, seed=5)
    got = served_pixels(identity_path, encode(img, "PNG"), "image/png", color="BGR")
    np.testing.assert_array_equal(got, np.asarray(img, np.float32)[:, :, ::-1])


@pytest.mark.parametrize("preset", ["unit", "imagenet", "caffe", "inception"])
def test_presets(identity_path: Path, preset: str) -> None:
    img = image(W, H, seed=6)
    got = served_pixels(identity_path, encode(img, "PNG"), "image/png", preset=preset)
    pixels = np.asarray(img, np.float32)
    p = PRESETS[preset]
    if p["color"] == "BGR":
        pixels = pixels[:, :, ::-1]
    want = normalised(pixels, p["scale"], p["mean"], p["std"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # spot-check the presets' meaning, not only their table
    if preset == "unit":
        assert 0.0 <= got.min() and got.max() <= 1.0
    if preset == "inception":
        assert -1.0 <= got.min() and got.max() <= 1.0


def test_explicit_scale_mean_std_override_the_preset(identity_path: Path) -> None:
    img = image(W, H, seed=7)
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    got = served_pixels(
        identity_path,
        encode(img, "PNG"),
        "image/png",
        preset="imagenet",
        scale=0.5,
        mean=mean,
        std=std,
    )
    want = normalised(np.asarray(img, np.float32), 0.5, mean, std)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_greyscale_jpeg_fills_every_channel(identity_path: Path) -> None:
    body = jpeg(W, H, mode="L", seed=8)
    got = served_pixels(identity_path, body, "image/jpeg")
    grey = decoded(body, "L")[:, :, 0]
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], grey)


def test_colour_image_into_a_greyscale_model(grey_identity_path: Path) -> None:
    img = image(W, H, seed=9)
    got = served_pixels(grey_identity_path, encode(img, "PNG"), "image/png")
    assert got.shape == (H, W, 1)
    rgb = np.asarray(img, np.float64)
    luma = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114  # ITU-R 601
    np.testing.assert_allclose(got[:, :, 0], luma, atol=1.0)


def test_cmyk_jpeg_comes_back_as_rgb(identity_path: Path) -> None:
    rgb = image(W, H, seed=10)
    body = encode(rgb.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(body)) as check:
        assert check.mode == "CMYK"
    got = served_pixels(identity_path, body, "image/jpeg")
    assert got.shape == (H, W, 3)
    # the colours survive the trip through CMYK (JPEG loses a little)
    assert np.abs(got - np.asarray(rgb, np.float32)).mean() < 3.0


def test_rgba_png_drops_alpha(identity_path: Path) -> None:
    rgb = image(W, H, seed=11)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.full((H, W), 200, np.uint8)))
    got = served_pixels(identity_path, encode(rgba, "PNG"), "image/png")
    np.testing.assert_array_equal(got, np.asarray(rgb, np.float32))


def test_palette_png_is_looked_up(identity_path: Path) -> None:
    pal = image(W, H, seed=12).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    body = encode(pal, "PNG")
    table = np.asarray(pal.getpalette(), np.float32).reshape(-1, 3)
    want = table[np.asarray(pal)]
    np.testing.assert_array_equal(served_pixels(identity_path, body, "image/png"), want)


def test_greyscale_with_alpha_png(identity_path: Path) -> None:
    la = image(W, H, mode="LA", seed=13)
    got = served_pixels(identity_path, encode(la, "PNG"), "image/png")
    grey = np.asarray(la, np.float32)[:, :, 0]
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], grey)


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped(identity_path: Path) -> None:
    # a 16-bit ramp over the whole range: clipping to 0..255 would make most of it white
    values = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    body = encode(Image.fromarray(values), "PNG")
    got = served_pixels(identity_path, body, "image/png")
    want = np.rint(values / 257.0).astype(np.float32)
    for c in range(3):
        np.testing.assert_allclose(got[:, :, c], want, atol=1.0)


def test_stretch_resize_matches_pillow(identity_path: Path) -> None:
    img = image(64, 20, seed=14)  # another aspect ratio: stretched, not cropped
    got = served_pixels(identity_path, encode(img, "PNG"), "image/png", resize="stretch")
    want = np.asarray(img.resize((W, H), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(got, want)


def test_crop_takes_the_centre_and_stretch_keeps_everything(identity_path: Path) -> None:
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    img = bands(3 * W, H, [red, green, blue])  # three 16x12 bands side by side
    body = encode(img, "PNG")
    cropped = served_pixels(identity_path, body, "image/png", resize="crop", crop_ratio=1.0)
    # crop_ratio 1: the shorter side already fits, so the centre 16x12 is the green band
    np.testing.assert_array_equal(cropped, np.asarray(img.crop((W, 0, 2 * W, H)), np.float32))
    stretched = served_pixels(identity_path, body, "image/png", resize="stretch")
    assert stretched[:, 0, 0].min() > 200 and stretched[:, -1, 2].min() > 200  # red … blue


def test_crop_ratio_matches_resize_then_centre_crop(identity_path: Path) -> None:
    img = image(64, 48, seed=15)
    got = served_pixels(
        identity_path, encode(img, "PNG"), "image/png", resize="crop", crop_ratio=0.5
    )
    # torchvision's recipe in two passes: the shorter side to size / ratio (48 -> 24, so
    # 64x48 -> 32x24), then the centre 16x12; sizes chosen so that both passes are exact
    resized = img.resize((32, 24), Image.Resampling.BILINEAR)
    want = np.asarray(resized.crop((8, 6, 8 + W, 6 + H)), np.float32)
    # one resampling pass instead of two: the same up to rounding
    np.testing.assert_allclose(got, want, atol=2.0)


def test_channels_first_model_gets_nchw(nchw_path: Path) -> None:
    img = image(W, H, seed=16)
    got, info = served_pixels_and_info(nchw_path, encode(img, "PNG"), "image/png")
    assert info["preprocess"]["layout"] == "NCHW"
    assert info["signature"]["inputs"][0]["shape"] == [None, 3, H, W]
    # the model permutes CHW back to HWC, so its output is the image itself
    np.testing.assert_array_equal(got, np.asarray(img, np.float32))


def test_uint8_model_gets_raw_uint8_pixels(uint8_identity_path: Path) -> None:
    img = image(W, H, seed=17)
    got, info = served_pixels_and_info(uint8_identity_path, encode(img, "PNG"), "image/png")
    assert info["preprocess"]["dtype"] == "uint8"
    np.testing.assert_array_equal(got, np.asarray(img, np.float32))


def test_uint8_model_refuses_a_normalising_preset(uint8_identity_path: Path) -> None:
    from scorepack import Scorer
    from scorepack.errors import ModelError

    config = scoring_config(preprocess=PreprocessConfig(preset="imagenet"), warmup=False)
    scorer = Scorer(tf_backend(uint8_identity_path), config)
    with pytest.raises(ModelError, match="uint8"):
        scorer.start(timeout=60)
    scorer.close()
