"""Named model variants. configs/<name>.yaml mirrors each entry (checked by a test).

Reference variants reproduce the official PCMANet checkpoints (docs/pcmanet.md): g = 4 for
ResNet-50 S4 and 8 otherwise, T = 5 (S4/MS3) or 10 (AVSS), 1 or 71 output channels.
Light variants are ours, for real time on CPU: narrower decoder, light audio encoder,
correct token layout and gradient through the selected queries.
"""

from __future__ import annotations

from pcmanet.config import AudioConfig, BackboneConfig, ModelConfig

TASKS = ("s4", "ms3", "avss")
REFERENCE_BACKBONES = ("resnet50", "pvt_v2_b5")


def reference_config(variant: str, task: str) -> ModelConfig:
    """The official architecture for a backbone ('resnet50' | 'pvt_v2_b5') and task."""
    if variant not in REFERENCE_BACKBONES:
        raise ValueError(f"variant={variant!r}: expected one of {', '.join(REFERENCE_BACKBONES)}")
    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
    out_indices = (1, 2, 3, 4) if variant == "resnet50" else (0, 1, 2, 3)
    return ModelConfig(
        name=f"{variant}_{task}",
        backbone=BackboneConfig(name=variant, weights=None, out_indices=out_indices),
        audio=AudioConfig(encoder="vggish", weights=None, embed_dim=128, frozen=True),
        groups=4 if (variant, task) == ("resnet50", "s4") else 8,
        num_classes=71 if task == "avss" else 1,
        num_frames=10 if task == "avss" else 5,
    )


def _light(name: str, backbone: str, dim: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        backbone=BackboneConfig(name=backbone, weights=None, out_indices=(1, 2, 3, 4)),
        audio=AudioConfig(encoder="light", weights=None, embed_dim=128, frozen=False),
        dim=dim, groups=8, num_heads=4, head_dim=dim // 4, head_hidden=dim // 2,
        scrambled_tokens=False, query_grad=True,
    )


PCMANET_VARIANTS: dict[str, ModelConfig] = {
    **{f"{v}_{t}": reference_config(v, t) for v in REFERENCE_BACKBONES for t in TASKS},
    "resnet18_light": _light("resnet18_light", "resnet18", 96),
    "mobilenetv3_light": _light("mobilenetv3_light", "mobilenetv3_large_100", 64),
    "efficientnet_b0_light": _light("efficientnet_b0_light", "efficientnet_b0", 64),
}
