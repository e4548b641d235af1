"""Object paste (pcmanet/data/paste.py): what a pasted object does to frames and target, the
donor draw, and the S4 loader with paste on a real family set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcmanet.data import build_dataset
from pcmanet.data.eval_families import write_family
from pcmanet.data.paste import Donor, ObjectPaste
from pcmanet.data.synthetic import main as synthetic_main
from pcmanet.data.transforms import ClipAugment, random_hue

H = W = 32


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """5 grey frames and one labelled mask: a 6x6 square at the top left."""
    frames = torch.full((5, 3, H, W), 0.5)
    masks = torch.zeros(1, 1, H, W)
    masks[..., 2:8, 2:8] = 1.0
    return frames, masks


def _donor(same: bool, side: int = 10) -> Donor:
    """A red side x side square on black, at the bottom right of its frame."""
    frame, mask = torch.zeros(3, H, W), torch.zeros(1, H, W)
    frame[0, -side:, -side:] = 1.0
    mask[:, -side:, -side:] = 1.0
    return Donor(frame=frame, mask=mask, same=same)


@pytest.mark.parametrize(("same", "scale", "side"), [(False, 1.0, 10), (True, 0.5, 5)])
def test_a_pasted_object_lands_on_every_frame_and_changes_the_target(
        same: bool, scale: float, side: int) -> None:
    """Another category's object is cut from the target where it covers it; an object of the
    sounding category joins the target."""
    paste = ObjectPaste(prob=1.0, scale_min=scale, scale_max=scale)
    frames, masks = _scene()
    own = masks[0, 0].bool()
    overlaps = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out_f, out_m = paste(frames, masks, [_donor(same=same)])
        red = (out_f[:, 0] > 0.5) & (out_f[:, 1] < 0.25)                   # (5, H, W)
        assert torch.equal(red, red[:1].expand_as(red))                    # same place, all 5
        assert int(red[0].sum()) == side * side                            # 10 px x scale
        expected = own | red[0] if same else own & ~red[0]
        assert torch.equal(out_m[0, 0].bool(), expected)
        overlaps += int(bool((own & red[0]).any()))
    assert 0 < overlaps < 40  # sometimes over the target, sometimes beside it


def test_a_sliver_of_an_object_is_not_pasted() -> None:
    frames, masks = _scene()
    out_f, out_m = ObjectPaste(prob=1.0)(frames, masks, [_donor(same=True, side=3)])
    assert torch.equal(out_f, frames) and torch.equal(out_m, masks)


def test_the_donor_draw_never_picks_the_clip_itself_and_follows_prob() -> None:
    paste = ObjectPaste(prob=0.5, max_objects=3)
    torch.manual_seed(0)
    draws = [paste.donors(i % 7, 7) for i in range(700)]
    assert all(i % 7 not in d for i, d in enumerate(draws))
    assert {len(d) for d in draws} == {0, 1, 2, 3}
    assert 0.4 < sum(not d for d in draws) / len(draws) < 0.6
    assert {j for d in draws for j in d} == set(range(7))
    torch.manual_seed(0)
    assert [paste.donors(i % 7, 7) for i in range(700)] == draws           # seeded: same draws
    assert ObjectPaste(prob=1.0).donors(0, 1) == []                        # nobody to take from


def test_same_kind_donors_follow_same_p_and_cost_no_draws_when_off() -> None:
    pool = [2, 5]                                                          # the clip's own kind
    torch.manual_seed(0)
    plain = [ObjectPaste(prob=1.0, max_objects=2).donors(i % 7, 7) for i in range(400)]
    torch.manual_seed(0)
    assert [ObjectPaste(prob=1.0, max_objects=2, same_p=0.0).donors(i % 7, 7, pool)
            for i in range(400)] == plain                                  # off: the same draws
    torch.manual_seed(1)
    always = [ObjectPaste(prob=1.0, max_objects=2, same_p=1.0).donors(0, 7, pool)
              for _ in range(200)]
    assert {j for d in always for j in d} == set(pool)
    torch.manual_seed(2)
    half = [j for _ in range(400)
            for j in ObjectPaste(prob=1.0, max_objects=2, same_p=0.5).donors(0, 7, pool)]
    share = sum(j in pool for j in half) / len(half)
    assert 0.5 < share < 0.7                                               # 0.5 + 0.5 * 2 / 6
    assert ObjectPaste(prob=1.0, same_p=1.0).donors(0, 7, []) != []        # no pool: any clip


@pytest.mark.parametrize("kwargs", [{"prob": 1.5}, {"max_objects": 0}, {"same_p": -0.1},
                                    {"scale_min": 0.0}, {"scale_min": 2.0, "scale_max": 1.0}])
def test_impossible_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="paste"):
        ObjectPaste(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pitch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pitch")
    write_family(root, "pitch", {"train": 12, "val": 2, "test": 2}, size=64, seed=5)
    return root


def test_s4_training_items_get_objects_of_other_clips(pitch_root: Path) -> None:
    """With paste on, an item's frames change; its target grows only when a donor shares its
    category, and otherwise stays inside the clip's own mask."""
    plain = build_dataset("s4", str(pitch_root), "train", image_size=64)
    paste = ObjectPaste(prob=1.0, max_objects=2)
    pasted = build_dataset("s4", str(pitch_root), "train", image_size=64, paste=paste)
    grew = kept = 0
    same_kind = build_dataset("s4", str(pitch_root), "train", image_size=64,
                              paste=ObjectPaste(prob=1.0, max_objects=2, same_p=1.0))
    for i in range(len(same_kind)):                                        # every donor joins
        torch.manual_seed(i)
        item, base = same_kind[i], plain[i]
        alone = sum(c.category == plain.clips[i].category for c in plain.clips) == 1
        assert alone or bool((item["masks"][0].bool() & ~base["masks"][0].bool()).any())
    for seed in range(30):
        i = seed % len(plain)
        torch.manual_seed(seed)
        donors = paste.donors(i, len(plain))                               # the draw replayed
        torch.manual_seed(seed)
        item, base = pasted[i], plain[i]
        assert item["frames"].shape == base["frames"].shape
        assert not torch.equal(item["frames"], base["frames"])
        own = base["masks"][0].bool()
        new = item["masks"][0].bool()
        same = any(pasted.clips[j].category == pasted.clips[i].category for j in donors)
        if not same:
            assert not bool((new & ~own).any())                            # only covered
            kept += 1
        elif bool((new & ~own).any()):
            grew += 1
        assert torch.equal(item["masks"][1:], base["masks"][1:])           # unlabelled: zero
    assert grew > 0 and kept > 0


def test_paste_is_refused_where_it_cannot_apply(pitch_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train split only"):
        build_dataset("s4", str(pitch_root), "val", image_size=64, paste=ObjectPaste())
    assert synthetic_main(["--out", str(tmp_path), "--task", "ms3", "--train", "2", "--val", "1",
                           "--test", "1", "--size", "64", "--seed", "1"]) == 0
    with pytest.raises(ValueError, match="category per clip"):
        build_dataset("ms3", str(tmp_path), "train", image_size=64, paste=ObjectPaste())


def test_hue_rotation_moves_colour_and_keeps_brightness() -> None:
    red = torch.zeros(5, 3, 8, 8)
    red[:, 0] = 0.8
    grey = torch.full((5, 3, 8, 8), 0.4)
    torch.manual_seed(0)
    turned = [ClipAugment(flip_p=0, scale_min=1, brightness=0, contrast=0, saturation=0,
                          hue_p=1.0)(red, torch.zeros(1, 1, 8, 8))[0] for _ in range(8)]
    assert all(torch.allclose(t.amax(1), red.amax(1), atol=1e-3) for t in turned)  # value kept
    assert sum(not torch.allclose(t, red, atol=0.05) for t in turned) >= 6         # hue moved
    assert all(torch.equal(t, t[:1].expand_as(t)) for t in turned)                 # one per clip
    assert torch.allclose(random_hue(grey, 1.0), grey, atol=1e-3)                  # no hue: kept


def test_without_hue_the_augmentation_draws_what_it_always_drew() -> None:
    """hue_p=0 (the default) leaves torch's RNG where the augmentation always left it, so a
    seeded run without the option augments exactly as before it existed."""
    frames, masks = torch.rand(5, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    torch.manual_seed(3)
    ClipAugment()(frames, masks)
    after = torch.rand(1)
    torch.manual_seed(3)
    torch.rand(7)
    assert torch.equal(torch.rand(1), after)


def test_a_pasted_object_gets_a_hue_of_its_own() -> None:
    frames, masks = _scene()
    colours = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out_f, _ = ObjectPaste(prob=1.0, scale_min=1.0, scale_max=1.0, hue_p=1.0)(
            frames, masks, [_donor(same=False)])
        changed = (out_f[0] - frames[0]).abs().sum(0) > 0.1                         # the object
        assert int(changed.sum()) == 100
        rgb = out_f[0][:, changed].mean(1)
        assert float(rgb.max()) == pytest.approx(1.0, abs=1e-3)                    # value kept
        colours.add(tuple(round(float(c), 1) for c in rgb))
    assert len(colours) >= 4                                                        # not all red
