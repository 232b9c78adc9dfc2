"""The clean stage's rules as plain functions: the 2,048-px rule, bombs, corrupt images, the
token rule, empty turns and text normalisation."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from etl.config import CleanConfig, TokenizerConfig
from etl.stages.clean import CleanRules, clean_sample
from tests.conftest import bomb_png, jpeg_bytes, png_bytes
from udfs.decode import MAX_DECODE_PIXELS
from udfs.images import ImageRejected, ImageRules, clean_image, target_size
from udfs.tokens import count_tokens, load_tokenizer, normalise_text, prepare_tokenizer


@pytest.mark.parametrize(
    "size, expected",
    [((3000, 1200), (2048, 819)), ((1200, 3000), (819, 2048)), ((2048, 100), (2048, 100)), ((640, 480), (640, 480))],
)
def test_target_size_downscales_longest_side_to_2048_and_never_upscales(size, expected):
    assert target_size(*size, max_side=2048) == expected


def test_oversize_jpeg_is_downscaled_keeping_format_and_aspect():
    cleaned = clean_image(jpeg_bytes((3000, 1200)), ImageRules())
    assert cleaned.changed and (cleaned.width, cleaned.height) == (2048, 819)
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert image.format == "JPEG" and image.size == (2048, 819)


def test_image_within_limits_keeps_its_original_bytes():
    data = png_bytes((300, 200))
    cleaned = clean_image(data, ImageRules())
    assert cleaned.data is data and not cleaned.changed and (cleaned.width, cleaned.height) == (300, 200)


def test_cmyk_is_converted_to_rgb_without_resizing():
    cleaned = clean_image(jpeg_bytes((40, 30), mode="CMYK"), ImageRules())
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert cleaned.changed and image.mode == "RGB" and image.size == (40, 30)


def test_decompression_bomb_is_rejected_from_the_header_before_decoding():
    with pytest.raises(ImageRejected) as caught:
        clean_image(bomb_png(20000, 20000), ImageRules(max_pixels=100_000_000))
    assert caught.value.reason == "decompression_bomb"


def test_the_bomb_guard_is_pillows_own_and_never_lifted_for_the_whole_process():
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, after udfs.images is imported
    assert 2 * Image.MAX_IMAGE_PIXELS == MAX_DECODE_PIXELS == CleanConfig().max_pixels
    with pytest.raises(ValidationError, match="less than or equal"):
        CleanConfig(max_pixels=MAX_DECODE_PIXELS + 1)
    with pytest.raises(ImageRejected) as caught:  # over Pillow's limit: refused by Image.open itself
        clean_image(bomb_png(20000, 20000), ImageRules())
    assert caught.value.reason == "decompression_bomb"


@pytest.mark.parametrize("data", [b"not an image", jpeg_bytes((200, 200))[:300], png_bytes((64, 64))[:60]])
def test_corrupt_or_truncated_images_are_rejected(data):
    with pytest.raises(ImageRejected) as caught:
        clean_image(data, ImageRules())
    assert caught.value.reason == "corrupt_image"


def test_normalise_text():
    assert normalise_text("  Hello\u00a0  world\t!\r\n\n\n\nBye\x00\u200b ") == "Hello world !\n\nBye"
    assert normalise_text("e\u0301") == "\u00e9"  # NFC
    assert normalise_text(None) == ""


@pytest.fixture(scope="module")
def tokenizer_json():
    t = TokenizerConfig()
    return prepare_tokenizer(t.path, t.gguf_package, t.gguf_file, t.cache_dir)


def test_smollm2_tokenizer_has_its_vocabulary(tokenizer_json):
    tokenizer = load_tokenizer(tokenizer_json)
    assert tokenizer.get_vocab_size() == 49152
    assert count_tokens(tokenizer, ["", "hello"]) == [0, 1]


def _row(images, texts):
    return {
        "sample_id": "s",
        "subset": "t",
        "category": "General VQA",
        "source": "t",
        "images": [{"bytes": b, "path": "p", "image_id": "old", "width": None, "height": None} for b in images],
        "texts": [{"user": u, "assistant": a} for u, a in texts],
        "source_ref": {"file": "f", "member": None, "row": 0},
    }


def test_clean_sample_drops_long_and_empty_turns_and_keeps_the_rest(tokenizer_json):
    rules = CleanRules(ImageRules(), max_turn_tokens=8192, tokenizer_json=tokenizer_json)
    long_answer = " ".join(["word"] * 9000)  # one token per " word": 9,000 > 8,192
    row = _row(
        [png_bytes((50, 40))], [("What is it?", "A  red\tbox."), ("Tell me", long_answer), ("", "orphan"), ("q", "  ")]
    )
    out = clean_sample(row, rules)
    assert out["reject_reason"] is None
    assert out["texts"] == [{"user": "What is it?", "assistant": "A red box."}]
    assert (out["turns_dropped_empty"], out["turns_dropped_too_long"]) == (2, 1)
    assert out["images"][0]["width"] == 50 and out["images"][0]["image_id"] == "old"  # unchanged bytes keep their id


def test_clean_sample_with_no_turn_left_is_rejected(tokenizer_json):
    rules = CleanRules(ImageRules(), max_turn_tokens=5, tokenizer_json=tokenizer_json)
    out = clean_sample(_row([], [("one two three four", "five six seven eight")]), rules)
    assert out["reject_reason"] == "no_turns_left" and "1 over 5 tokens" in out["reject_detail"]


def test_clean_sample_with_a_corrupt_image_is_rejected_and_a_resized_image_gets_a_new_id(tokenizer_json):
    rules = CleanRules(ImageRules(max_side=64), max_turn_tokens=8192, tokenizer_json=tokenizer_json)
    bad = clean_sample(_row([png_bytes((10, 10)), b"garbage"], [("q", "a")]), rules)
    assert bad["reject_reason"] == "corrupt_image" and "image 1" in bad["reject_detail"]
    resized = clean_sample(_row([png_bytes((200, 100))], [("q", "a")]), rules)
    image = resized["images"][0]
    assert (
        (image["width"], image["height"]) == (64, 32) and image["image_id"] != "old" and resized["images_resized"] == 1
    )
