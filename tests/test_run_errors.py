"""Errors a user can fix are one line naming the path and what to do (issue 26, list 12)."""

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import faces as faces_data


def test_a_broken_image_in_a_faces_folder_is_named(tmp_path):
    rng = np.random.default_rng(0)
    for person in ("s1", "s2"):
        (tmp_path / person).mkdir()
        for index in (1, 2):
            Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8)).save(
                tmp_path / person / f"{index}.png")
    images = faces_data.read_identity_folder(str(tmp_path), image_size=(8, 8))
    assert images.images.shape == (4, 8, 8, 1)
    broken = tmp_path / "s2" / "3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(faces_data.ImageReadError) as caught:
        faces_data.read_identity_folder(str(tmp_path), image_size=(8, 8))
    message = str(caught.value)
    assert message.startswith(f"cannot read image {broken} (cannot identify image file")
    assert message.endswith("; remove or replace that file") and "\n" not in message
