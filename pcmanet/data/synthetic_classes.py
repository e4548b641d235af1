"""Object classes of the synthetic world: look (shape, texture, hue) and sound recipe, by style.

* style "shapes" (:data:`OBJECT_CLASSES`): the demo model's 8 classes;
* style "alt" (:data:`ALT_OBJECT_CLASSES`): 8 others with no shape, texture name or sound of
  the first;
* style "signs" (:data:`SIGNS_OBJECT_CLASSES`): 8 more, disjoint from both, with sound types
  the others lack (fast rising chirps, falling zaps, steady harmonic tones, noise bands);
* style "wide" (:data:`WIDE_OBJECT_CLASSES`): 32 classes with procedural silhouettes
  (:mod:`pcmanet.data.synthetic_outlines`) and sounds in groups of four that differ along one
  axis only (pitch in three registers, pulse rate on two carriers, noise band, brightness,
  modulation rate), for pre-training that has to use shape and fine sound differences (write
  it with ``--random-hue 1``: its class hues are spread evenly but carry the class);
* :data:`STYLES` names them; :func:`style_classes` looks one up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .synthetic_outlines import Outline
from .synthetic_shapes import Shape


class Texture(enum.Enum):
    """Surface patterns, evaluated in object coordinates so they move with the object."""

    SOLID = "solid"
    STRIPES = "stripes"
    CHECKER = "checker"
    DOTS = "dots"
    GRADIENT = "gradient"
    # style "alt"
    RIPPLES = "ripples"  # concentric rings
    HATCH = "hatch"  # thin diagonal cross-hatch lines
    SPOTS = "spots"  # dots of three sizes
    # style "signs"
    WAVES = "waves"  # wavy bands
    GRID = "grid"  # thin lines along both axes
    SECTORS = "sectors"  # pie slices around the centre
    HALVES = "halves"  # two-tone, split through the centre


@dataclass(frozen=True)
class SoundRecipe:
    """A class's sound: tonal partials plus band noise, gated by a pulse train and modulated.

    Partial n (1-based) has frequency ``f0 n sqrt(1 + inharmonic n^2)`` and amplitude
    ``n ** -rolloff``; ``noise_mix`` blends unit-RMS tonal and band-noise parts (0 tonal, 1 noise).
    ``pulse_hz > 0`` gates the sound into pulses of ``duty`` of each period, each decaying with
    ``decay_s`` and chirping up by ``sweep_octaves``; vibrato and amplitude modulation are
    sinusoidal. Rates scale with the instance's :class:`Voice`.
    """

    f0: float = 0.0
    harmonics: int = 1
    rolloff: float = 1.0
    inharmonic: float = 0.0
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0  # fraction of f0
    sweep_octaves: float = 0.0
    noise_band: tuple[float, float] = (300.0, 3000.0)  # Hz
    noise_mix: float = 0.0
    pulse_hz: float = 0.0
    duty: float = 1.0
    decay_s: float = 0.0  # 0: flat pulses
    am_hz: float = 0.0
    am_depth: float = 0.0


@dataclass(frozen=True)
class ObjectClass:
    """A sounding-object class: name (AVSBench-style category), look and sound."""

    name: str
    shape: Shape | Outline
    texture: Texture
    hue: float  # degrees
    sound: SoundRecipe


OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("disc_hum", Shape.DISC, Texture.SOLID, 0.0, SoundRecipe(
        f0=240, harmonics=8, rolloff=0.9, vibrato_hz=5.0, vibrato_depth=0.01,
        am_hz=0.7, am_depth=0.3)),
    ObjectClass("square_buzzer", Shape.SQUARE, Texture.STRIPES, 220.0, SoundRecipe(
        f0=95, harmonics=28, rolloff=0.6, pulse_hz=3.0, duty=0.6)),
    ObjectClass("triangle_chirp", Shape.TRIANGLE, Texture.CHECKER, 120.0, SoundRecipe(
        f0=1200, harmonics=2, rolloff=2.0, sweep_octaves=1.0, pulse_hz=4.0, duty=0.5)),
    ObjectClass("star_clip-clop", Shape.STAR, Texture.DOTS, 55.0, SoundRecipe(
        noise_band=(4000.0, 7000.0), noise_mix=1.0, pulse_hz=5.0, duty=0.25, decay_s=0.025)),
    ObjectClass("ring_bell", Shape.RING, Texture.GRADIENT, 280.0, SoundRecipe(
        f0=520, harmonics=7, rolloff=0.7, inharmonic=0.04, pulse_hz=1.25, duty=0.95,
        decay_s=0.3)),
    ObjectClass("cross_siren", Shape.CROSS, Texture.STRIPES, 28.0, SoundRecipe(
        f0=800, harmonics=3, rolloff=1.5, vibrato_hz=0.6, vibrato_depth=0.3)),
    ObjectClass("hexagon_rumble", Shape.HEXAGON, Texture.CHECKER, 175.0, SoundRecipe(
        f0=60, harmonics=5, rolloff=1.0, noise_band=(80.0, 350.0), noise_mix=0.7,
        am_hz=2.0, am_depth=0.6)),
    ObjectClass("crescent_whistle", Shape.CRESCENT, Texture.DOTS, 325.0, SoundRecipe(
        f0=2900, harmonics=2, rolloff=2.5, vibrato_hz=7.0, vibrato_depth=0.03,
        noise_band=(2500.0, 4000.0), noise_mix=0.2, pulse_hz=1.6, duty=0.7)),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in OBJECT_CLASSES)

# A disjoint second set: no shape, name or sound of OBJECT_CLASSES, for fine-tuning on objects a
# model trained on the default style has never seen.
ALT_OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("ellipse_pluck", Shape.ELLIPSE, Texture.RIPPLES, 15.0, SoundRecipe(
        f0=196, harmonics=10, rolloff=1.8, inharmonic=0.001, pulse_hz=2.5, duty=0.9,
        decay_s=0.09)),
    ObjectClass("rhombus_tom-tom", Shape.RHOMBUS, Texture.HATCH, 60.0, SoundRecipe(
        f0=75, harmonics=4, rolloff=1.5, sweep_octaves=-0.6, noise_band=(50.0, 300.0),
        noise_mix=0.5, pulse_hz=2.0, duty=0.45, decay_s=0.07)),
    ObjectClass("arrow_tremolo", Shape.ARROW, Texture.STRIPES, 105.0, SoundRecipe(
        f0=440, harmonics=5, rolloff=1.0, noise_band=(400.0, 3000.0), noise_mix=0.2, am_hz=12.0,
        am_depth=0.9)),
    ObjectClass("heart_coo", Shape.HEART, Texture.SPOTS, 150.0, SoundRecipe(
        f0=330, harmonics=4, rolloff=1.4, sweep_octaves=-0.25, pulse_hz=0.8, duty=0.8)),
    ObjectClass("bowtie_hiss", Shape.BOWTIE, Texture.GRADIENT, 195.0, SoundRecipe(
        noise_band=(5000.0, 7200.0), noise_mix=1.0, am_hz=0.4, am_depth=0.8)),
    ObjectClass("chevron_falling-whistle", Shape.CHEVRON, Texture.DOTS, 240.0, SoundRecipe(
        f0=1800, harmonics=2, rolloff=2.0, sweep_octaves=-1.5, pulse_hz=1.4, duty=0.85)),
    ObjectClass("ell_ticking", Shape.ELL, Texture.CHECKER, 285.0, SoundRecipe(
        noise_band=(1000.0, 2500.0), noise_mix=1.0, pulse_hz=8.0, duty=0.3, decay_s=0.02)),
    ObjectClass("keyhole_trill", Shape.KEYHOLE, Texture.RIPPLES, 330.0, SoundRecipe(
        f0=950, harmonics=3, rolloff=1.5, vibrato_hz=14.0, vibrato_depth=0.06,
        noise_band=(800.0, 3000.0), noise_mix=0.15, pulse_hz=0.7, duty=0.75)),
)

# A third set, disjoint from both: other shapes and textures, and sound types the others lack
# (fast rising chirps, falling zaps, steady harmonic tones, noise bands of their own).
SIGNS_OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("house_up-chirp", Shape.HOUSE, Texture.WAVES, 35.0, SoundRecipe(
        f0=220, harmonics=1, sweep_octaves=1.5, pulse_hz=2.5, duty=0.4)),
    ObjectClass("gear_organ", Shape.GEAR, Texture.GRID, 80.0, SoundRecipe(
        f0=131, harmonics=14, rolloff=0.5, am_hz=0.3, am_depth=0.2)),
    ObjectClass("trapezoid_rain", Shape.TRAPEZOID, Texture.SECTORS, 125.0, SoundRecipe(
        noise_band=(1500.0, 4500.0), noise_mix=1.0, am_hz=5.0, am_depth=0.3)),
    ObjectClass("kite_surf", Shape.KITE, Texture.HALVES, 170.0, SoundRecipe(
        noise_band=(150.0, 600.0), noise_mix=1.0, pulse_hz=0.9, duty=0.7, decay_s=0.6)),
    ObjectClass("bolt_zap", Shape.BOLT, Texture.GRID, 215.0, SoundRecipe(
        f0=5000, harmonics=1, sweep_octaves=-1.0, pulse_hz=6.0, duty=0.2, decay_s=0.03)),
    ObjectClass("semicircle_chime", Shape.SEMICIRCLE, Texture.WAVES, 260.0, SoundRecipe(
        f0=1000, harmonics=3, rolloff=1.5, inharmonic=0.02, pulse_hz=2.0, duty=0.98,
        decay_s=0.25)),
    ObjectClass("frame_bursts", Shape.FRAME, Texture.SECTORS, 305.0, SoundRecipe(
        noise_band=(600.0, 1200.0), noise_mix=1.0, pulse_hz=3.0, duty=0.5)),
    ObjectClass("tee_beeper", Shape.TEE, Texture.HALVES, 350.0, SoundRecipe(
        f0=600, harmonics=9, rolloff=1.0, pulse_hz=2.0, duty=0.3)),
)

# The wide style: 8 sound groups of 4; inside a group the sounds differ along one axis only.
# Pitches avoid every evaluation family's (pcmanet.data.eval_sounds) by >= 6 %.
_WIDE_SOUNDS: tuple[tuple[str, tuple[SoundRecipe, ...]], ...] = (
    ("tone", tuple(SoundRecipe(f0=f, harmonics=2, rolloff=2.5, am_hz=0.5, am_depth=0.2)
                   for f in (130.0, 220.0, 370.0, 620.0))),
    ("note", tuple(SoundRecipe(f0=f, harmonics=8, rolloff=1.2, pulse_hz=1.6, duty=0.85,
                               decay_s=0.4) for f in (100.0, 160.0, 255.0, 410.0))),
    ("whistle", tuple(SoundRecipe(f0=f, harmonics=1, vibrato_hz=5.0, vibrato_depth=0.01)
                      for f in (1050.0, 1650.0, 2600.0, 4100.0))),
    ("knock", tuple(SoundRecipe(noise_band=(800.0, 2500.0), noise_mix=1.0, pulse_hz=r,
                                duty=0.3, decay_s=0.03) for r in (1.2, 2.4, 4.8, 9.0))),
    ("beep", tuple(SoundRecipe(f0=520.0, harmonics=4, rolloff=1.5, pulse_hz=r, duty=0.45)
                   for r in (0.7, 1.5, 3.2, 6.5))),
    ("noise", tuple(SoundRecipe(noise_band=b, noise_mix=1.0, am_hz=0.3, am_depth=0.3)
                    for b in ((180.0, 450.0), (650.0, 1300.0), (1800.0, 3200.0),
                              (4500.0, 7000.0)))),
    ("buzz", tuple(SoundRecipe(f0=140.0, harmonics=30, rolloff=r) for r in (0.3, 0.9, 1.8, 3.0))),
    ("tremolo", tuple(SoundRecipe(f0=330.0, harmonics=5, rolloff=1.2, am_hz=r, am_depth=0.85)
                      for r in (0.5, 2.0, 6.0, 15.0))),
)
_WIDE_SOUND_LABELS = {"tone": "{f0:.0f}hz", "note": "{f0:.0f}hz", "whistle": "{f0:.0f}hz",
                      "knock": "{pulse_hz:g}per-s", "beep": "{pulse_hz:g}per-s",
                      "noise": "{band}hz", "buzz": "rolloff{rolloff:g}",
                      "tremolo": "{am_hz:g}hz-am"}
# outline indices whose silhouettes differ from every named shape and from each other (see
# synthetic_outlines; tests/pcmanet/test_wide_style.py checks it)
WIDE_OUTLINES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 21, 22, 24, 27, 29, 31,
                 32, 33, 36, 37, 38, 39, 40, 42, 44, 47)
_WIDE_TEXTURES = (Texture.SOLID, Texture.SOLID, Texture.STRIPES, Texture.SOLID,
                  Texture.CHECKER, Texture.SOLID, Texture.DOTS, Texture.SOLID)


def _wide_classes() -> tuple[ObjectClass, ...]:
    out = []
    for g, (group, recipes) in enumerate(_WIDE_SOUNDS):
        for k, recipe in enumerate(recipes):
            i = 4 * g + k
            # 7 is coprime to 32: the outline kinds spread over the sound groups
            outline = Outline(WIDE_OUTLINES[(7 * i) % len(WIDE_OUTLINES)])
            label = _WIDE_SOUND_LABELS[group].format(
                f0=recipe.f0, pulse_hz=recipe.pulse_hz, rolloff=recipe.rolloff,
                am_hz=recipe.am_hz, band=f"{recipe.noise_band[0]:.0f}-{recipe.noise_band[1]:.0f}")
            out.append(ObjectClass(f"{outline.value}_{group}-{label}", outline,
                                   _WIDE_TEXTURES[(3 * i) % len(_WIDE_TEXTURES)],
                                   (i * 360.0 / 32 * 13) % 360, recipe))
    return tuple(out)


WIDE_OBJECT_CLASSES: tuple[ObjectClass, ...] = _wide_classes()
DEFAULT_STYLE = "shapes"
STYLES: dict[str, tuple[ObjectClass, ...]] = {
    "shapes": OBJECT_CLASSES, "alt": ALT_OBJECT_CLASSES, "signs": SIGNS_OBJECT_CLASSES,
    "wide": WIDE_OBJECT_CLASSES}


def style_classes(style: str) -> tuple[ObjectClass, ...]:
    """The object classes of a style ("shapes": :data:`OBJECT_CLASSES`, "alt":
    :data:`ALT_OBJECT_CLASSES`); ValueError naming the valid styles for any other name."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    return STYLES[style]
