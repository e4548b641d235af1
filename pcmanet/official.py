"""Import of reference PCMANet checkpoints (official code, key tables in tests/pcmanet/reference/).

The key map is explicit: each official key is renamed by exactly one rule below, or dropped
by a named rule (the ResNet's unused second branch and `gf4.seq2`, never called by the
reference forward pass). Anything else — an unknown key, a missing key, a wrong shape — is
an error naming the file and the first offending keys.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor

from pcmanet.build import build_pcmanet
from pcmanet.model import PCMANet
from pcmanet.variants import reference_config
from pcmanet.weights_file import CheckpointError, as_state_dict, load_exact, read_weights_file

# (pattern, replacement); the first matching rule wins. Official stage k is our index k-1.
_DECODER_RULES: list[tuple[str, str]] = [
    (r"^conv([1-4])\.", r"lateral.{k}."),
    (r"^aud_fc1?\.", r"audio_proj."),                 # aud_fc1 (aud_fc in the PVT MS3 model)
    (r"^avga([1-4])\.", r"avga.{k}."),
    (r"^qsca([1-4])\.aud_fc\.", r"qsca.{k}.aud_fc."),
    (r"^qsca([1-4])\.attn\.to_patch_embedding\.1\.", r"qsca.{k}.patch_embed."),
    (r"^qsca([1-4])\.attn\.transformer\.layers\.0\.0\.norm\.", r"qsca.{k}.norm."),
    (r"^qsca([1-4])\.attn\.transformer\.layers\.0\.0\.fn\.to_out\.0\.", r"qsca.{k}.to_out."),
    (r"^qsca([1-4])\.attn\.transformer\.layers\.0\.0\.fn\.(v_to_q|v_to_kv|a_to_qkv)\.",
     r"qsca.{k}.\2."),
    (r"^gf([1-4])\.", r"gf.{k}."),
    (r"^output_conv([1-4])\.", r"heads.{k}."),
]
_RESNET_RULES: list[tuple[str, str]] = [
    (r"^resnet\.(conv1|bn1|layer1|layer2)\.", r"backbone.\1."),
    (r"^resnet\.layer3_1\.", r"backbone.layer3."),
    (r"^resnet\.layer4_1\.", r"backbone.layer4."),
]
_PVT_RULES: list[tuple[str, str]] = [
    (r"^encoder_backbone\.patch_embed1\.", r"backbone.patch_embed."),
    (r"^encoder_backbone\.patch_embed([2-4])\.", r"backbone.stages_{k}.downsample."),
    (r"^encoder_backbone\.block([1-4])\.(\d+)\.mlp\.dwconv\.dwconv\.",
     r"backbone.stages_{k}.blocks.\2.mlp.dwconv."),
    (r"^encoder_backbone\.block([1-4])\.(\d+)\.", r"backbone.stages_{k}.blocks.\2."),
    (r"^encoder_backbone\.norm([1-4])\.", r"backbone.stages_{k}.norm."),
]
# Keys the reference holds but never uses in its forward pass (docs/pcmanet.md).
DROPPED: dict[str, str] = {
    r"^resnet\.(layer3_2|layer4_2)\.": "unused second ResNet branch (layer3_2/layer4_2)",
    r"^gf4\.seq2\.": "gf4.seq2, never called by the reference",
}


def map_official_key(key: str, variant: str) -> str | None:
    """Official key -> our key; None for a key on the drop list; KeyError if no rule fits."""
    if key.startswith("module."):            # saved from a DataParallel wrapper
        key = key[len("module."):]
    if any(re.match(p, key) for p in DROPPED):
        return None
    backbone_rules = _RESNET_RULES if variant == "resnet50" else _PVT_RULES
    for pattern, repl in backbone_rules + _DECODER_RULES:
        m = re.match(pattern, key)
        if m:
            # Stage numbers are 1-based in the reference and 0-based here.
            target = repl.replace("{k}", str(int(m.group(1)) - 1)) if "{k}" in repl else repl
            return m.expand(target) + key[m.end():]
    raise KeyError(key)


def convert_official_state_dict(
    state: dict[str, Tensor], variant: str, path: str | Path = "<state_dict>"
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename every key; returns (our state_dict, dropped keys). Unknown keys raise."""
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        try:
            new = map_official_key(key, variant)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    if unknown:
        guess = detect_official_variant(state)
        hint = f" (the keys look like variant={guess!r})" if guess and guess != variant else ""
        raise CheckpointError(
            f"{path}: {len(unknown)} keys fit no rule of the {variant} key map{hint}: "
            + ", ".join(unknown[:5]))
    return out, dropped


def detect_official_variant(state: dict[str, Tensor]) -> str | None:
    keys = list(state)
    if any(k.startswith(("resnet.", "module.resnet.")) for k in keys):
        return "resnet50"
    if any(k.startswith(("encoder_backbone.", "module.encoder_backbone.")) for k in keys):
        return "pvt_v2_b5"
    return None


def detect_official_task(state: dict[str, Tensor], variant: str) -> str:
    """s4 / ms3 / avss from the head width, AVGA group count and audio-linear name."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = state.get("output_conv1.3.weight")
    if head is not None and head.shape[0] > 1:
        return "avss"
    if variant == "resnet50":
        w = state.get("avga1.seq1.0.weight")
        return "s4" if w is not None and w.shape[1] == 64 else "ms3"
    return "ms3" if "aud_fc.weight" in state else "s4"


def load_official(
    path: str | Path, variant: str = "resnet50", task: str = "s4", vggish: str | Path | None = None
) -> PCMANet:
    """Load a reference PCMANet checkpoint; returns the model in eval mode (reference mode).

    path: the official `model.module.state_dict()` file (`torch.load(weights_only=True)`).
    variant: 'resnet50' | 'pvt_v2_b5'; task: 's4' | 'ms3' | 'avss'.
    vggish: optional local VGGish state_dict; then the model also accepts log-mel examples
        (B*T, 1, 96, 64). Without it, audio must be VGGish embeddings (B*T, 128).
    `model(frames (B*T, 3, H, W), audio (B*T, 128))` -> output whose `.logits` are out1..out4.
    """
    cfg = reference_config(variant, task)
    state = as_state_dict(read_weights_file(path), path)
    found = detect_official_variant(state)
    if found is not None and found != variant:
        raise CheckpointError(f"{path}: this is a {found} checkpoint; call "
                              f"load_official(path, variant={found!r}, task=...)")
    ours, _dropped = convert_official_state_dict(state, variant, path)
    if vggish is not None:
        from dataclasses import replace

        cfg = replace(cfg, audio=replace(cfg.audio, weights=str(vggish)))
    model = build_pcmanet(cfg, with_audio_encoder=vggish is not None)
    own = model.state_dict()
    if vggish is not None:                   # VGGish weights come from their own file
        ours.update({k: v for k, v in own.items() if k.startswith("audio_encoder.")})
    guess = detect_official_task(state, variant)
    hint = (f"The keys look like task={guess!r}: call load_official(path, "
            f"variant={variant!r}, task={guess!r})." if guess != task else "")
    load_exact(model, ours, path, hint)
    return model.eval()
