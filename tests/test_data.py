import warnings

import numpy as np
import pytest
from PIL import Image

from glancemap.images import BadImageError, list_images, load_image, scan_images


def _make_folder(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    rng = np.random.default_rng(0)
    rgb = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(d / "good.jpg")
    Image.fromarray(rgb[..., 0]).save(d / "grey.png")
    Image.fromarray(rgb).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((rng.random((30, 30)) * 65535).astype(np.uint16)).save(d / "sixteen.png")
    Image.fromarray(rgb[:2, :3]).save(d / "tiny.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.gif")
    full = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (d / "notes.txt.bak").write_text("not an image")
    (d / "empty.jpg").write_bytes(b"")
    return d


def test_conversions_and_bad_files(tmp_path):
    d = _make_folder(tmp_path)
    files = list_images([d])
    assert len(files) == 11
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good, log = scan_images(files)
        scan_images(files, log)  # a second pass does not warn again
    assert log.count == 4
    assert sorted(p.split("/")[-1] for p in log.seen) == ["corrupt.png", "empty.jpg", "notes.txt.bak", "truncated.jpg"]
    assert len([w for w in caught if "skipping" in str(w.message)]) == 4
    assert len(good) == 7
    for f in good:
        img = load_image(f)
        assert img.mode == "RGB"
    sixteen = np.asarray(load_image(d / "sixteen.png"))
    assert sixteen.max() > 200  # rescaled from 16 bit, not clipped to white or black
    assert np.asarray(load_image(d / "rgba.png")).shape == (60, 80, 3)


def test_bad_image_error_names_the_file(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"nope")
    with pytest.raises(BadImageError, match="x.jpg"):
        load_image(p)


def test_file_lists(tmp_path, image_folder):
    lst = tmp_path / "list.txt"
    lst.write_text("# a comment\nimages/img000.png\n\nimages/img001.png\n")
    assert [p.name for p in list_images([lst])] == ["img000.png", "img001.png"]
    with pytest.raises(FileNotFoundError):
        list_images([tmp_path / "missing"])
