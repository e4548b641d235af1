"""Object classes of the synthetic world: look (shape, texture, hue) and sound recipe, by style.

* style "shapes" (:data:`OBJECT_CLASSES`): the demo model's 8 classes;
* style "alt" (:data:`ALT_OBJECT_CLASSES`): 8 others with no shape, texture name or sound of
  the first;
* style "signs" (:data:`SIGNS_OBJECT_CLASSES`): 8 more, disjoint from both, with sound types
  the others lack (fast rising chirps, falling zaps, steady harmonic tones, noise bands);
* :data:`STYLES` names them; :func:`style_classes` looks one up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
    shape: Shape
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
DEFAULT_STYLE = "shapes"
STYLES: dict[str, tuple[ObjectClass, ...]] = {
    "shapes": OBJECT_CLASSES, "alt": ALT_OBJECT_CLASSES, "signs": SIGNS_OBJECT_CLASSES}


def style_classes(style: str) -> tuple[ObjectClass, ...]:
    """The object classes of a style ("shapes": :data:`OBJECT_CLASSES`, "alt":
    :data:`ALT_OBJECT_CLASSES`); ValueError naming the valid styles for any other name."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    return STYLES[style]
