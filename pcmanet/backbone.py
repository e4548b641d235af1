"""Visual backbones from timm, as four-level feature pyramids (strides 4, 8, 16, 32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

# Backbones checked to give four levels at strides 4/8/16/32 with out_indices (1, 2, 3, 4)
# (pvt_v2 exposes exactly four levels, so it takes (0, 1, 2, 3)).
KNOWN_BACKBONES: dict[str, tuple[int, ...]] = {
    "resnet50": (1, 2, 3, 4),
    "resnet18": (1, 2, 3, 4),
    "pvt_v2_b5": (0, 1, 2, 3),
    "mobilenetv3_large_100": (1, 2, 3, 4),
    "mobilenetv4_conv_small": (1, 2, 3, 4),
    "efficientnet_b0": (1, 2, 3, 4),
}


def build_backbone(
    name: str, out_indices: tuple[int, ...], weights: str | None = None,
    stride2: bool = False,
) -> nn.Module:
    """A timm `features_only` model returning [(B, C_k, H/s_k, W/s_k)] for s_k = 4, 8, 16, 32.

    `weights` is a local file (timm or torchvision state_dict, .pth/.bin/.safetensors); nothing
    is ever downloaded. Channels and strides are in `model.feature_info`.
    stride2: also return the level before out_indices[0], at stride 2, first in the list
        (five levels, for model.refine_dim); an error if the backbone has none.
    """
    if stride2:
        if out_indices[0] == 0:
            raise ValueError(f"model.refine_dim needs a stride-2 backbone level, but {name} "
                             f"has none before out_indices {list(out_indices)}; set "
                             "model.refine_dim=0")
        out_indices = (out_indices[0] - 1, *out_indices)
    kwargs: dict[str, Any] = {"features_only": True, "out_indices": out_indices}
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights {path} not found: pass a local file or set "
                "model.backbone.weights=null to start from random weights"
            )
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"model.backbone.name={name!r} is not a timm model") from None
        raise
    reductions = model.feature_info.reduction()  # type: ignore[union-attr,operator]
    wanted = [2, 4, 8, 16, 32] if stride2 else [4, 8, 16, 32]
    if list(reductions) != wanted:
        raise ValueError(
            f"backbone {name} with out_indices {out_indices} gives strides {reductions}; "
            f"PCMANet needs {wanted} (known settings: {KNOWN_BACKBONES})"
        )
    return model  # type: ignore[no-any-return]
