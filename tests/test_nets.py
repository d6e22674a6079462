"""DFNet / RefinementNet modules, shared blocks and the strict checkpoint loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bench.errors import UserError
from bench.methods.nets import DFNet, RefinementNet, load_into, load_refinement
from bench.methods.nets.layers import DecoderBlock, EncoderBlock, SameConv, decode_region

DATA = Path(__file__).resolve().parent / "data" / "conformance"  # copied from ../shared


def _tsv(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t"):
            continue
        name, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((name, dims, dtype))
    return rows


def _meta(cls):
    with torch.device("meta"):
        return cls()


@pytest.mark.parametrize(
    ("cls", "tsv", "n_params"),
    [(DFNet, "dfnet_state_dict.tsv", 32_880_504),
     (RefinementNet, "refinement_state_dict.tsv", 36_858_507)],
)
def test_state_dict_matches_published_layout(cls, tsv, n_params):
    model = _meta(cls)
    mine = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in model.state_dict().items()]
    assert mine == _tsv(DATA / tsv)  # names, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_same_conv_layout_and_sizes():
    odd = SameConv(4, 8, 7, 2)  # k - s = 5: asymmetric padding, stored as conv.1
    even = SameConv(4, 8, 3, 1)  # k - s = 2: symmetric, stored as conv
    assert "conv.1.weight" in odd.state_dict() and "conv.weight" in even.state_dict()
    x = torch.randn(1, 4, 32, 48)
    assert odd(x).shape == (1, 8, 16, 24) and even(x).shape == (1, 8, 32, 48)
    # asymmetric: one more zero row/column after than before (2 before, 3 after for k=7)
    ref = nn.functional.conv2d(nn.functional.pad(x, (2, 3, 2, 3)), odd.conv2d.weight,
                               odd.conv2d.bias, stride=2)
    assert torch.equal(odd(x), ref)


def _tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    chans = (3, 5, 6, 7)
    enc = [EncoderBlock(chans[i], chans[i + 1], 3, plain=i == 0) for i in range(3)]
    dec = [DecoderBlock(7, 6, 6), DecoderBlock(6, 5, 5), DecoderBlock(5, 3, 3)]
    for m in [*enc, *dec]:
        m.eval()
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return enc, dec


@pytest.mark.parametrize(
    "box", [(10, 21, 5, 17), (0, 7, 0, 40), (33, 40, 0, 3), (0, 40, 0, 48), (19, 20, 47, 48)]
)
def test_decode_region_equals_full_decode(box):
    enc, dec = _tiny_unet()
    x = torch.rand(2, 3, 40, 48)
    with torch.inference_mode():
        feats = [x]
        for e in enc:
            feats.append(e(feats[-1]))
        skips = feats[-2::-1]
        full = feats[-1]
        for d, s in zip(dec, skips, strict=True):
            full = d(full, s)
        part = decode_region(dec, feats[-1], skips, box)
    y0, y1, x0, x1 = box
    torch.testing.assert_close(part, full[..., y0:y1, x0:x1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_refinement_roi_equals_full_forward_small():
    """Hole-box decoding gives the full forward's output (random net, 256x256)."""
    torch.manual_seed(1)
    net = RefinementNet().eval()
    x = torch.rand(1, 20, 256, 256)
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 90:150, 40:101] = 1
    x[:, :1] = mask
    with torch.inference_mode():
        roi = net.forward_stack(x)
        net.roi = False
        full = net.forward_stack(x)
        via_forward = net(x[:, 1:], x[:, :1])
    torch.testing.assert_close(roi, full, rtol=0, atol=2e-6)
    assert torch.equal(roi[..., :90, :], x[:, 1:4, :90, :])  # known region passes through
    assert torch.equal(via_forward, full)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.BatchNorm2d(3)


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module_prefix", "both"])
def test_loader_accepts_published_formats(tmp_path, wrap):
    src = _Tiny()
    state = src.state_dict()
    if wrap in ("module_prefix", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"state_dict": state, "epoch": 3} if wrap in ("state_dict", "both") else state
    torch.save(obj, tmp_path / "ck.pth")
    dst = load_into(_Tiny(), tmp_path / "ck.pth")
    assert not dst.training
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_loader_wrong_key_lists_missing_and_unexpected(tmp_path):
    state = _Tiny().state_dict()
    state["conv.weights"] = state.pop("conv.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError) as err:
        load_into(_Tiny(), tmp_path / "bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg and "missing keys: 1 (conv.weight)" in msg
    assert "unexpected keys: 1 (conv.weights)" in msg and "\n" not in msg


def test_loader_wrong_shape_is_clear(tmp_path):
    state = _Tiny().state_dict()
    state["conv.weight"] = torch.zeros(3, 2, 5, 5)
    torch.save({"state_dict": state}, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"shape mismatches: 1 \(conv.weight 3x2x5x5 "
                                        r"\(expected 3x2x3x3\)\)"):
        load_into(_Tiny(), tmp_path / "shape.pth")


def test_loader_refuses_non_checkpoints(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth: not a readable torch checkpoint"):
        load_into(_Tiny(), tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="expected a state_dict"):
        load_into(_Tiny(), tmp_path / "list.pth")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_into(_Tiny(), tmp_path / "missing.pth")


def test_refinement_loader_rejects_dfnet_file(tmp_path):
    """The real loader on the real layout: a DFNet file given as refinement.pth."""
    model = _meta(DFNet).to_empty(device="cpu")
    torch.save(model.state_dict(), tmp_path / "refinement.pth")
    with pytest.raises(UserError) as err:
        load_refinement(tmp_path / "refinement.pth")
    msg = str(err.value)
    assert "does not fit RefinementNet" in msg
    assert "missing keys: 109 (en1.encode.0.conv.1.weight" in msg
    assert "unexpected keys: 215 (en_0.encode.0.conv.1.weight" in msg


@pytest.mark.slow
@pytest.mark.parametrize("hole_at", [(100, 180, 60, 150), (0, 40, 200, 256)])
def test_dfnet_first_output_equals_forward_in_the_hole(hole_at):
    torch.manual_seed(2)
    net = DFNet().eval()
    img = torch.rand(1, 3, 256, 256)
    known = torch.ones(1, 1, 256, 256)
    y0, y1, x0, x1 = hole_at
    known[..., y0:y1, x0:x1] = 0
    with torch.inference_mode():
        first = net.first_output(img * known, known)
        full = net(img * known, known)
        net.roi = False
        no_roi = net.first_output(img * known, known)
    assert len(full) == 6 and full[0].shape == (1, 3, 256, 256)
    assert [t.shape[-1] for t in full] == [256, 128, 64, 32, 16, 8]
    hole = known == 0
    torch.testing.assert_close(first[hole.expand_as(first)], full[0][hole.expand_as(first)],
                               rtol=0, atol=2e-6)
    assert torch.equal(no_roi, full[0])
