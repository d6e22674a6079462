"""``telea@512``: the coarse base of the two-stage pipeline as a benchmark row of its own."""

import numpy as np
from conftest import smooth_photo

from bench.masks import centre_square_mask
from bench.methods import create, default_methods
from bench.methods.two_stage import upscaled_coarse


def test_telea_at_512_is_the_pipelines_coarse_base():
    image = smooth_photo(768, 1024, seed=3)
    mask = centre_square_mask(768, 1024)
    zeroed = image.copy()
    zeroed[mask] = 0
    expected = np.where(mask[..., None], upscaled_coarse(create("telea"), zeroed, mask), image)
    m = create("telea@512")
    out = m(image, mask)
    assert np.array_equal(out, expected)
    assert np.array_equal(out[~mask], image[~mask])
    meta = m.metadata()
    assert meta["coarse_size"] == 512 and meta["base"]["name"] == "telea"
    assert "telea@512" in default_methods()
