"""The kind gate (pcmanet/kind_gate.py): its term, what each head reads, its losses, the
streaming split with it, and a real training run that fills, saves and reloads its kinds."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pcmanet.build import build_pcmanet
from pcmanet.checkpoint import load_checkpoint
from pcmanet.config import ConfigError, validate_model_config
from pcmanet.data import build_dataset
from pcmanet.evaluate import main as evaluate_main
from pcmanet.gate_eval import main as gate_eval_main
from pcmanet.kind_gate import FLOOR, SCALE, KindGate, audio_kind_loss
from pcmanet.kind_loss import kind_labels, labelled_objects
from pcmanet.model import FrameFeatures
from pcmanet.train import main as train_main
from pcmanet.twin_eval import main as twin_main
from tests.conftest import REPO

TINY = str(REPO / "configs" / "test_tiny.yaml")
KINDS = ("disc_low", "kite_mid", "star_high")


def _gated(tiny_cfg, **changes):
    torch.manual_seed(0)
    model = build_pcmanet(replace(tiny_cfg, kind_gate=True, kinds=KINDS, **changes),
                          with_audio_encoder=False).eval()
    for p in model.gate.parameters():              # a gate whose term really moves the logits
        torch.nn.init.normal_(p, std=0.3)
    model.gate.scale.data.fill_(2.0)
    for head in model.heads:                       # a mask with blobs to propose
        torch.nn.init.normal_(head[-1].weight, std=1.0)
    return model


def _clip(B, T, D, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B * T, 3, size, size, generator=g), torch.rand(B * T, D, generator=g)


class ColourMeans(torch.nn.Module):
    """A stand-in window backbone: its one level is the window's mean colour (N, 3, 1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.mean((2, 3), keepdim=True)]


def _sound_of(gate: KindGate, kind: int) -> None:
    """Make the audio head name `kind` whatever the sound."""
    gate.audio.weight.data.zero_()
    gate.audio.bias.data.fill_(-20.0)
    gate.audio.bias.data[kind] = 20.0


def _two_blobs(size: int = 64) -> torch.Tensor:
    """Finest logits (1, 1, size, size): two confident square blobs, background very negative."""
    logits = torch.full((1, 1, size, size), -8.0)
    logits[..., 8:24, 8:24] = 8.0
    logits[..., 36:56, 36:56] = 8.0
    return logits


@pytest.mark.parametrize("stride", [2, 4])
def test_proposals_are_the_mask_blobs_around_its_peaks(stride: int) -> None:
    gate = KindGate(ColourMeans(), 4, KINDS, peaks=4, stride=stride)
    regions = gate.regions(_two_blobs())                                   # (1, 4, 64/s, 64/s)
    g = 64 // stride
    assert regions.shape == (1, 4, g, g)
    used = regions.flatten(2).amax(2)[0]
    assert int(used.sum()) == 2                                             # two peaks, two empty
    union = regions.amax(1)[0]
    expected = torch.zeros(g, g)
    expected[8 // stride:24 // stride, 8 // stride:24 // stride] = 1
    expected[36 // stride:56 // stride, 36 // stride:56 // stride] = 1
    assert torch.equal(union, expected)                                     # the blobs, exactly
    assert float(gate.regions(torch.full((1, 1, 64, 64), -8.0)).sum()) == 0   # nothing above


def test_on_the_finer_grid_two_objects_two_pixels_apart_stay_two_regions() -> None:
    """Two confident blobs with a 2-pixel gap: one region on a grid of 4-pixel cells (the
    gap shares a cell with both), two on 2-pixel cells."""
    logits = torch.full((1, 1, 64, 64), -8.0)
    logits[..., 10:30, 10:30] = 8.0
    logits[..., 10:30, 32:50] = 8.0
    coarse = KindGate(ColourMeans(), 4, KINDS, radius=1.0, stride=4).regions(logits)
    fine = KindGate(ColourMeans(), 4, KINDS, radius=1.0, stride=2).regions(logits)
    assert int(coarse.flatten(2).amax(2).sum()) == 1
    assert int(fine.flatten(2).amax(2).sum()) == 2
    assert float((fine[0, 0] * fine[0, 1]).sum()) == 0                       # apart


def test_a_proposal_fills_through_lukewarm_cells_but_only_a_confident_cell_seeds_one() -> None:
    """An object whose mask is confident in one part and lukewarm (p = 0.4) in the rest is one
    region, holes bridged; a blob that is lukewarm throughout seeds none."""
    gate = KindGate(ColourMeans(), 4, KINDS, peaks=4, threshold=0.5, fill=0.3, radius=0.5,
                    stride=4)
    logits = torch.full((1, 1, 64, 64), -8.0)
    logits[..., 8:40, 8:24] = math.log(0.4 / 0.6)                          # lukewarm body
    logits[..., 8:16, 8:24] = 4.0                                           # confident top
    logits[..., 48:60, 40:60] = math.log(0.4 / 0.6)                         # lukewarm only
    regions = gate.regions(logits)
    used = regions.flatten(2).amax(2)[0]
    assert used.tolist() == [1.0, 0.0, 0.0, 0.0]
    expected = torch.zeros(16, 16)
    expected[2:10, 2:6] = 1
    assert torch.equal(regions[0, 0], expected)
    with pytest.raises(ValueError, match="fill <= threshold"):
        KindGate(ColourMeans(), 4, KINDS, threshold=0.3, fill=0.5)


def test_the_term_keeps_the_blob_whose_window_matches_the_sound() -> None:
    """A window head that names 'disc' for a red window and 'kite' for a green one: with a
    disc sound the red blob keeps +log K and the green one drops to the floor; with a kite
    sound the other way round; pixels outside the blobs are left alone."""
    torch.manual_seed(0)
    gate = KindGate(ColourMeans(), 4, KINDS)
    assert gate.scale.item() == SCALE
    gate.scale.data.fill_(1.0)
    gate.head.linear.weight.data = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 0.0],
                                                 [0.0, 0.0, 0.0]])
    gate.head.linear.bias.data.zero_()

    frames = torch.zeros(1, 3, 64, 64)
    frames[0, 0, 8:24, 8:24] = 1.0                                          # red blob
    frames[0, 1, 36:56, 36:56] = 1.0                                        # green blob
    logits = _two_blobs()
    a0 = torch.randn(5, 4)
    one = torch.tensor([0])
    for kind, keep, drop in ((0, (16, 16), (44, 44)), (1, (44, 44), (16, 16))):
        _sound_of(gate, kind)
        term = KindGate.add(torch.zeros(1, 1, 64, 64),
                            gate.term(frames, logits, gate.audio_logits(a0), one, T=5)[0])
        assert term[0, 0, keep[0], keep[1]].item() == pytest.approx(math.log(3), abs=1e-3)
        assert term[0, 0, drop[0], drop[1]].item() == pytest.approx(math.log(FLOOR), abs=1e-3)
        assert term[0, 0, 2, 60].item() == 0.0                              # no blob there
    _sound_of(gate, 2)                                                      # a sound no window has
    term, regions = gate.term(frames, logits, gate.audio_logits(a0), one, T=5)
    assert torch.equal(regions, gate.proposals(frames, logits))            # what it was made of
    blobs = gate.regions(logits).amax(1, keepdim=True) > 0
    assert float(term[blobs].max()) <= math.log(3 * 0.02)                   # every blob pushed down
    gate.scale.data.fill_(0.5)
    assert float(gate.term(frames, logits, gate.audio_logits(a0), one, T=5)[0].min()) == (
        pytest.approx(0.5 * math.log(FLOOR), abs=1e-3))


@pytest.mark.parametrize("compete", [0.0, 2.0])
def test_an_unsure_window_loses_to_the_frame_s_best_match(compete: float) -> None:
    """Red window: disc 0.9; green window: disc 0.3 (unsure); a disc sound. On its own the
    green region keeps log(3 * 0.3) ~ -0.1 (its lukewarm logits stay half painted); competing
    with the red one it gets log(3 * 0.3 * (0.3 / 0.9) ** 2); the best region is unchanged."""
    gate = KindGate(ColourMeans(), 4, KINDS, compete=compete, split=0.0)
    gate.scale.data.fill_(1.0)
    _sound_of(gate, 0)
    frames = torch.zeros(1, 3, 64, 64)
    logits = _two_blobs()
    regions = gate.regions(logits)
    first = regions[0, :, 8, 8].argmax()                                   # the red blob's region
    seen = torch.zeros(1, 4, 3)
    seen[0, :, 1] = 1.0
    seen[0, first] = torch.tensor([0.9, 0.1, 0.0])
    seen[0, 1 - first] = torch.tensor([0.3, 0.7, 0.0])
    gate.window_kinds = lambda frames, regions: seen                       # type: ignore[method-assign]
    term = gate.term(frames, logits, gate.audio_logits(torch.randn(5, 4)), torch.tensor([0]),
                     T=5)[0]                                               # (1, 1, 32, 32)
    assert term[0, 0, 8, 8].item() == pytest.approx(math.log(3 * 0.9), abs=1e-4)
    expected = 3 * 0.3 * (0.3 / 0.9) ** compete
    assert term[0, 0, 22, 22].item() == pytest.approx(math.log(expected), abs=1e-4)
    with pytest.raises(ValueError, match="compete >= 0"):
        KindGate(ColourMeans(), 4, KINDS, compete=-1.0)


def _touching(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A red square and a blue one that touch (one confident blob of the mask over both) ->
    frames (1, 3, size, size) in normalised units, logits (1, 1, size, size)."""
    frames = torch.full((1, 3, size, size), -1.0)                           # grey background
    frames[0, :, 10:40, 8:30] = torch.tensor([2.0, -1.5, -1.5])[:, None, None]   # red
    frames[0, :, 16:46, 30:56] = torch.tensor([-1.5, -1.5, 2.0])[:, None, None]  # blue
    logits = torch.full((1, 1, size, size), -8.0)
    logits[..., 10:40, 8:30] = 8.0
    logits[..., 16:46, 30:56] = 8.0
    return frames, logits


def test_touching_objects_of_two_colours_become_two_proposals() -> None:
    """One flood-filled region over a red and a blue square that touch is cut along their
    border: each part is one square (on the 2-pixel grid), the second parts of regions left
    whole are empty; with split 0 the region stays whole."""
    frames, logits = _touching()
    gate = KindGate(ColourMeans(), 4, KINDS, peaks=2, stride=2, radius=1.0)
    assert int(gate.regions(logits).flatten(2).amax(2).sum()) == 1          # merged
    parts = gate.proposals(frames, logits)                                  # (1, 4, 32, 32)
    assert parts.shape == (1, 4, 32, 32)
    red = torch.zeros(32, 32)
    red[5:20, 4:15] = 1
    blue = torch.zeros(32, 32)
    blue[8:23, 15:28] = 1
    assert torch.equal(parts[0, 0], red)                                   # the seed's part
    assert torch.equal(parts[0, 2], blue)                                  # the other colour
    assert float(parts[0, 1].sum() + parts[0, 3].sum()) == 0               # nothing else
    whole = KindGate(ColourMeans(), 4, KINDS, peaks=2, stride=2, radius=1.0, split=0.0)
    assert torch.equal(whole.proposals(frames, logits), whole.regions(logits))
    with pytest.raises(ValueError, match="split >= 0"):
        KindGate(ColourMeans(), 4, KINDS, split=-1.0)


def test_one_object_is_not_cut_however_fine_its_texture_or_close_its_shades() -> None:
    """A one-pixel checker of yellow and black (its neighbourhood mean is one colour), and
    two shades 1.0 apart (under split 1.5), each stay one region; a part under 5 % of its
    region is not cut off either."""
    gate = KindGate(ColourMeans(), 4, KINDS, peaks=1, stride=2, radius=1.0)
    logits = torch.full((1, 1, 64, 64), -8.0)
    logits[..., 8:56, 8:56] = 8.0
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float()
    yellow, black = torch.tensor([2.0, 2.0, -1.5]), torch.tensor([-2.0, -2.0, -1.5])
    textured = torch.where(checker.bool(), yellow[:, None, None], black[:, None, None])[None]
    shades = torch.zeros(1, 3, 64, 64)
    shades[..., 8:56, 32:56] = 1.0 / math.sqrt(3)                           # 1.0 apart
    speck = torch.zeros(1, 3, 64, 64)
    speck[..., 8:12, 8:12] = 3.0                                            # 4 of 576 cells
    for frames in (textured, shades, speck):
        parts = gate.proposals(frames, logits)
        assert torch.equal(parts[:, :1], gate.regions(logits))
        assert float(parts[:, 1].sum()) == 0


class TopHalfMeans(torch.nn.Module):
    """A stand-in window backbone that sees which way up a window is: the mean colour of its
    top half (N, 3, 1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, :, : x.shape[2] // 2].mean((2, 3), keepdim=True)]


def test_a_window_is_named_as_the_mean_over_its_turns() -> None:
    """An object red above and blue below, a head that reads the window's top half: upright
    (views 1) it names disc (red); over 4 turns (red on top, left half, blue on top, right
    half) disc and kite share the probability evenly."""
    frames = torch.zeros(1, 3, 64, 64)
    frames[0, 0, 16:32, 16:48] = 1.0                                       # red top half
    frames[0, 2, 32:48, 16:48] = 1.0                                       # blue bottom half
    regions = torch.zeros(1, 1, 32, 32)
    regions[0, 0, 8:24, 8:24] = 1.0
    one = KindGate(TopHalfMeans(), 4, KINDS, views=1)
    one.head.linear.weight.data = torch.tensor([[40.0, 0.0, 0.0], [0.0, 0.0, 40.0],
                                                [0.0, 0.0, 0.0]])
    one.head.linear.bias.data.zero_()
    four = KindGate(TopHalfMeans(), 4, KINDS, views=4)
    four.head.load_state_dict(one.head.state_dict())
    assert one.window_kinds(frames, regions)[0, 0].argmax().item() == 0
    seen = four.window_kinds(frames, regions)[0, 0]
    assert seen[0].item() == pytest.approx(seen[1].item(), abs=1e-4)       # red up = blue up
    assert seen[0].item() > 0.4 and seen[2].item() < 0.1
    with pytest.raises(ValueError, match="views <= 4"):
        KindGate(ColourMeans(), 4, KINDS, views=5)


def test_each_part_is_named_by_its_own_window() -> None:
    """Red names 'disc', blue 'kite': with a kite sound the blue square keeps log K and the
    red one that touches it drops to the floor (whole, both got one window's verdict)."""
    frames, logits = _touching()
    gate = KindGate(ColourMeans(), 4, KINDS, peaks=2, stride=2, radius=1.0)
    gate.scale.data.fill_(1.0)
    gate.head.linear.weight.data = torch.tensor([[40.0, 0.0, -40.0], [-40.0, 0.0, 40.0],
                                                 [0.0, 0.0, 0.0]])
    gate.head.linear.bias.data.zero_()
    _sound_of(gate, 1)
    term = gate.term(frames, logits, gate.audio_logits(torch.randn(5, 4)), torch.tensor([0]),
                     T=5)[0]                                                # (1, 1, 32, 32)
    assert term[0, 0, 15, 22].item() == pytest.approx(math.log(3), abs=1e-3)       # blue
    assert term[0, 0, 10, 8].item() == pytest.approx(math.log(FLOOR), abs=1e-3)    # red


def test_a_blanked_window_shows_its_region_and_not_the_neighbour_that_touches_it() -> None:
    """The red square's window also takes in much of the blue square that touches it; blanked
    (0) it holds no blue and the same red, with 2 pixels kept around the mask only a thin rim of
    blue; whole, a head that weighs blue three times as much as red names the red square's
    window 'kite' (blue), blanked 'disc' (red)."""
    from pcmanet.kind_loss import object_windows

    frames, _ = _touching()
    red = torch.zeros(1, 1, 64, 64)
    red[..., 10:40, 8:30] = 1.0
    whole, bare, rim = (object_windows(frames, red, turn=False, blank=b) for b in (None, 0, 2))
    blue_px = [int((w[0, 2] > 0.5).sum()) for w in (whole, bare, rim)]
    assert blue_px[0] > 100 and blue_px[1] == 0 and 0 < blue_px[2] < 0.2 * blue_px[0]
    inside = whole[0, 0] > 1.9                                              # red, far from blue
    assert int(inside.sum()) > 200
    assert torch.equal(bare[0, :, inside], whole[0, :, inside])
    region = torch.zeros(1, 1, 32, 32)
    region[..., 5:20, 4:15] = 1.0                                           # the red square
    named = []
    for blank in (None, 2):
        gate = KindGate(ColourMeans(), 4, KINDS, views=1, blank=blank)
        gate.head.linear.weight.data = torch.tensor([[10.0, -10.0, 0.0], [0.0, -30.0, 30.0],
                                                     [0.0, 0.0, 0.0]])      # red, 3 x blue
        gate.head.linear.bias.data.zero_()
        named.append(gate.window_kinds(frames, region)[0, 0].argmax().item())
    assert named == [1, 0]
    with pytest.raises(ValueError, match="blank None or >= 0"):
        KindGate(ColourMeans(), 4, KINDS, blank=-1)


def test_the_sound_is_the_mean_over_its_window_and_each_row_reads_its_own_window() -> None:
    gate = KindGate(ColourMeans(), 2, KINDS)
    gate.audio.weight.data = torch.tensor([[30.0, 0.0], [0.0, 30.0], [0.0, 0.0]])
    gate.audio.bias.data.zero_()
    a0 = torch.zeros(10, 2)
    a0[:5, 0] = 1.0                                  # window 0 sounds like kind 0
    a0[5:, 1] = 1.0                                  # window 1 like kind 1
    a0[2] = torch.tensor([0.0, 1.0])                 # one odd row in window 0
    sound = gate.sound(gate.audio_logits(a0), torch.tensor([1, 0, 0]), T=5)
    assert sound[0].argmax().item() == 1
    assert sound[1, 0].item() == pytest.approx(0.8, abs=1e-3)               # 4 of 5 rows
    assert torch.equal(sound[1], sound[2])


def test_the_gate_moves_every_stage_and_only_where_the_mask_is(tiny_cfg) -> None:
    model = _gated(tiny_cfg)
    model.gate.fill, model.gate.radius = 0.5, 0.3  # else one region takes this random mask
    frames, audio = _clip(1, 5, tiny_cfg.audio.embed_dim, seed=1)
    with torch.no_grad():
        gated = model(frames, audio)
        gate, model.gate = model.gate, None
        plain = model(frames, audio)
        model.gate = gate
    assert gated.kind_audio is not None and gated.kind_audio.shape == (5, 3)
    for a, b in zip(gated.logits, plain.logits, strict=True):
        diff = (a - b).abs()
        assert float(diff.max()) > 0.1                                      # every stage moved
        blobs = model.gate.regions(plain.logits[0]).amax(1, keepdim=True)  # (1.., 1, 16, 16)
        near = torch.nn.functional.max_pool2d(blobs, 3, 1, 1)               # + one cell
        far = torch.nn.functional.interpolate(near, size=a.shape[-2:]) == 0
        assert float((diff * far).max()) == 0.0                            # untouched there
    assert 0 < float(blobs.mean()) < 1


@pytest.mark.parametrize(("refine", "hears"), [(0, "shared"), (8, "shared"), (0, "own")])
def test_streaming_newest_frame_equals_clip_mode_with_a_gate(tiny_cfg, refine, hears) -> None:
    model = _gated(tiny_cfg, refine_dim=refine, gate_audio=hears)
    for head in model.heads:                       # mixed CIM masks: the gather paths run too
        head[-1].weight.data *= 200.0
    frames, audio = _clip(2, 5, tiny_cfg.audio.embed_dim, seed=3)
    with torch.no_grad():
        clip_out = model(frames, audio)
        feats = FrameFeatures.cat([model.encode_frames(frames[i:i + 1], audio[i:i + 1])
                                   for i in range(10)])
        targets = torch.tensor([4, 9])
        stream_out = model.gate_output(model.decode(feats, targets, out_size=(64, 64)),
                                       frames[targets], feats.audio, torch.tensor([0, 1]),
                                       heard=audio[targets])
        economy = model(frames, audio, targets=torch.tensor([0, 5]),
                        grad_rows=torch.tensor([0, 5]))
    for a, b, c in zip(clip_out.logits, stream_out.logits, economy.logits, strict=True):
        assert (a[targets] - b).abs().max() < 1e-4
        assert (a[[0, 5]] - c).abs().max() < 1e-4


@pytest.mark.parametrize("hears", ["shared", "own"])
def test_every_gate_parameter_learns(tiny_cfg, pitch_family: Path, hears: str) -> None:
    """One training step's losses (segmentation after the gate, the gate's own) reach the
    window head, the audio head (and its own audio encoder) and the scale; the model's audio
    encoder learns from the gate's kind loss only when the gate hears a0 (shared)."""
    from torch.utils.data import DataLoader

    from pcmanet.evaluate import forward_batch
    from pcmanet.train_step import clip_loss, gate_loss

    names = sorted({c.category for c in build_dataset("s4", str(pitch_family), "train").clips})
    torch.manual_seed(0)
    model = build_pcmanet(replace(tiny_cfg, kind_gate=True, kinds=tuple(names),
                                  gate_audio=hears)).train()
    for head in model.heads:                                 # a mask with blobs to propose
        torch.nn.init.normal_(head[-1].weight, std=1.0)
    batch = next(iter(DataLoader(build_dataset("s4", str(pitch_family), "train", image_size=64),
                                 batch_size=2)))
    out = forward_batch(model, batch)
    assert float(model.gate.regions(out.logits[0]).sum()) > 0
    loss = clip_loss(out.logits, batch, (1.0,) * 4) + gate_loss(model, out, batch, None)
    loss.backward()
    gate = model.gate
    assert (gate.audio_encoder is not None) == (hears == "own")
    parts = (gate.backbone, gate.head, gate.audio) + ((gate.audio_encoder,) if hears == "own"
                                                      else ())
    for part in parts:
        assert sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None) > 0
    assert gate.scale.grad is not None and float(gate.scale.grad) != 0.0
    assert any(p.grad is not None for p in model.backbone.parameters())  # the model's too
    model.zero_grad(set_to_none=True)                        # the gate's loss alone:
    gate_loss(model, forward_batch(model, batch), batch, None).backward()
    shared = sum(float(p.grad.abs().sum()) for p in model.audio_encoder.parameters()
                 if p.grad is not None)
    assert (shared > 0) == (hears == "shared")               # the model's encoder hears it?


def test_the_gate_also_learns_from_the_proposals_that_match_the_target() -> None:
    """gate_loss adds a window around each proposal whose IoU with its row's target is >= 0.5:
    the exact blob, half of it (IoU 0.5) and one a column wider count; a loose square around
    it (IoU 0.44) and another object do not."""
    from pcmanet.train_step import matching_regions

    masks = torch.zeros(2, 1, 64, 64)
    masks[0, 0, 8:24, 8:24] = 1.0
    masks[1, 0, 32:48, 32:48] = 1.0
    regions = torch.zeros(2, 3, 16, 16)
    regions[0, 0, 2:6, 2:6] = 1.0                        # row 0's object, exactly
    regions[0, 1, 10:14, 10:14] = 1.0                    # another object
    regions[1, 0, 8:10, 8:12] = 1.0                      # half of row 1's object: IoU 0.5
    regions[1, 1, 7:13, 7:13] = 1.0                      # loose: 16 / 36 < 0.5
    regions[1, 2, 8:12, 8:13] = 1.0                      # a column more: 16 / 20
    g, p = matching_regions(regions, masks, 0.5)
    assert list(zip(g.tolist(), p.tolist(), strict=True)) == [(0, 0), (1, 0), (1, 2)]
    assert matching_regions(regions, masks, 0.9)[0].tolist() == [0]
    assert matching_regions(torch.zeros(2, 3, 16, 16), masks, 0.5)[0].numel() == 0


def test_the_gate_s_gradients_are_clipped_in_their_own_groups(tiny_cfg) -> None:
    """The model's, the window side's and the audio side's: each parameter in exactly one."""
    from pcmanet.train import clip_groups

    model = _gated(tiny_cfg)
    groups = clip_groups(model)
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())         # a partition
    assert {id(p) for p in groups[2]} == {id(p) for p in model.gate.audio.parameters()} | {
        id(model.gate.scale)}
    assert {id(p) for p in groups[1]} >= {id(p) for p in model.gate.head.parameters()}
    model.gate = None
    assert len(clip_groups(model)) == 1


def test_the_gate_s_own_ears_learn_two_kinds_of_sound_alone(tiny_cfg) -> None:
    """fit_sounds trains the gate's own audio encoder and head on log-mel examples: a low and a
    high band, in noise, are told apart; the model's own audio encoder is not touched."""
    from pcmanet.kind_gate import fit_sounds

    torch.manual_seed(0)
    model = build_pcmanet(replace(tiny_cfg, kind_gate=True, kinds=("low", "high"),
                                  gate_audio="own"))
    before = [p.detach().clone() for p in model.audio_encoder.parameters()]
    g = torch.Generator().manual_seed(0)
    mels = torch.randn(64, 1, 96, 64, generator=g)
    names = ["low", "high"] * 32
    mels[0::2, :, :, 4:12] += 3.0
    mels[1::2, :, :, 48:56] += 3.0
    fit_sounds(model.gate, (mels, names), steps=40, batch=16, generator=g)
    model.gate.eval()
    with torch.no_grad():
        test = torch.randn(8, 1, 96, 64, generator=g)
        test[0::2, :, :, 4:12] += 3.0
        test[1::2, :, :, 48:56] += 3.0
        said = model.gate.audio_logits(test).argmax(1)
    assert said.tolist() == [0, 1] * 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.audio_encoder.parameters(),
                                                 strict=True))


def test_the_audio_loss_leaves_out_unknown_kinds() -> None:
    logits = torch.randn(4, 3)
    labels = kind_labels(KINDS, ["kite_mid", "silence", "disc_low", "kite_mid"],
                         torch.device("cpu"))
    assert labels.tolist() == [1, -1, 0, 1]
    expected = torch.nn.functional.cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]])
    assert audio_kind_loss(logits, labels).item() == pytest.approx(expected.item())
    assert audio_kind_loss(logits, torch.full((4,), -1)).item() == 0.0


def test_config_checks_name_the_key(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model\.kinds"):
        validate_model_config(replace(tiny_cfg, kinds=KINDS))
    with pytest.raises(ConfigError, match=r"model\.gate_audio"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_audio="mine"))
    with pytest.raises(ConfigError, match=r"model\.gate_audio.*kind_gate=true"):
        validate_model_config(replace(tiny_cfg, gate_audio="own"))
    with pytest.raises(ConfigError, match=r"model\.kind_gate"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, num_classes=71))
    with pytest.raises(ConfigError, match=r"model\.kinds"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=("a", "a")))
    with pytest.raises(ConfigError, match=r"model\.gate_stride"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_stride=0))
    with pytest.raises(ConfigError, match=r"model\.gate_compete"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_compete=-1.0))
    with pytest.raises(ConfigError, match=r"model\.gate_views"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_views=0))
    with pytest.raises(ConfigError, match=r"model\.gate_split"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_split=-1.0))
    with pytest.raises(ConfigError, match=r"model\.gate_blank"):
        validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_blank=-1))
    validate_model_config(replace(tiny_cfg, kind_gate=True, kinds=KINDS, gate_blank=None))
    with pytest.raises(ValueError, match="training fills it"):
        build_pcmanet(replace(tiny_cfg, kind_gate=True), with_audio_encoder=False)


@pytest.mark.slow
def test_a_gated_run_learns_its_kinds_from_the_train_split_and_reloads(
        tmp_path: Path, pitch_family: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["--config", TINY, "--data-root", str(pitch_family), "--task", "s4", "--out", str(out),
            "data.image_size=64", "data.num_workers=0", "train.batch_size=4",
            "model.kind_gate=true", "model.gate_audio=own", "data.paste=0.5", "data.hue=1.0",
            "data.augment=true"]
    assert train_main([*args, "train.epochs=2", "train.gate_warmup=6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(x) for x in lines if x.startswith('{"epoch"')]
    assert [r["step"] for r in records] == [2, 4] and all(r["loss"] == r["loss"] for r in records)
    warm = [json.loads(x) for x in lines if x.startswith('{"gate_warmup"')]
    labelled = labelled_objects(build_dataset("s4", str(pitch_family), "train"))
    assert len(warm) == 1 and warm[0]["gate_warmup"] == 6 and warm[0]["audio_loss"] >= 0
    assert warm[0]["objects"] == len(labelled[2])
    assert lines.index(next(x for x in lines if x.startswith('{"gate_warmup"'))) < lines.index(
        next(x for x in lines if x.startswith('{"epoch"')))                 # before the run
    found = sorted({c.category for c in build_dataset("s4", str(pitch_family), "train").clips})
    for name in ("best.pt", "last.pt"):
        model, cfg, _extra = load_checkpoint(out / name)
        assert cfg.kind_gate and list(cfg.kinds) == found and len(found) >= 2
        assert model.gate is not None and model.gate.kinds == found
    assert "kinds:" in (out / "config.yaml").read_text()
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--data-root", str(pitch_family),
                          "--task", "s4", "--split", "test", "--json", "--num-workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_videos"] == 4 and 0.0 <= result["miou"] <= 1.0
    where = ["--checkpoint", str(out / "best.pt"), "--data-root", str(pitch_family), "--json",
             "--split", "train"]                                           # every kind known
    assert twin_main(where) == 0 and gate_eval_main(where) == 0
    twin, parts = (json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:])
    assert parts["unknown_kind"] == 0 and parts["frames"] == twin["frames"] > 0
    assert parts["gate"] == pytest.approx(twin["iou_own"], abs=1e-5)        # the CLI, on a run
    assert train_main([*args[:8], "--resume", *args[8:], "train.epochs=3",
                       "train.gate_warmup=6"]) == 0                         # resumes, no warm-up
    assert '"gate_warmup"' not in capsys.readouterr().out
    # A kinds list that lacks a train category is refused with the key and the fix.
    code = train_main([*args[:7], str(tmp_path / "other"), *args[8:], "train.epochs=1",
                       f"model.kinds=[{found[0]}, nothing_else]"])
    assert code == 2
    assert "model.kinds lacks the train split's categories" in capsys.readouterr().err

