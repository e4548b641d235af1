"""Config -> model. The only place that reads a ModelConfig to build modules."""

from __future__ import annotations

from torch import nn

from pcmanet.backbone import build_backbone
from pcmanet.config import ModelConfig, validate_model_config
from pcmanet.decoder import GuidedFusion, MaskRefiner, output_head
from pcmanet.fusion import AVGA, QSCA
from pcmanet.kind_gate import KindGate
from pcmanet.layers import conv_bn_relu
from pcmanet.model import PCMANet


def build_audio(cfg: ModelConfig) -> nn.Module:
    """The audio encoder named by the config (VGGish from a local file, or the light one)."""
    from pcmanet.audio import build_audio_encoder

    encoder = build_audio_encoder(cfg.audio.encoder, out_dim=cfg.audio.embed_dim,
                                  weights=cfg.audio.weights, summary=cfg.audio.summary)
    if encoder.out_dim != cfg.audio.embed_dim:
        raise ValueError(
            f"model.audio.embed_dim={cfg.audio.embed_dim} but the {cfg.audio.encoder} encoder "
            f"gives {encoder.out_dim}")
    return encoder


def build_pcmanet(cfg: ModelConfig, with_audio_encoder: bool = True) -> PCMANet:
    """Build PCMANet from a ModelConfig.

    with_audio_encoder: False builds a model that takes audio embeddings (F, D) only, as the
    reference checkpoints do (VGGish is kept apart from them).
    """
    validate_model_config(cfg)
    backbone = build_backbone(cfg.backbone.name, cfg.backbone.out_indices, cfg.backbone.weights,
                              stride2=cfg.refine_dim > 0)
    channels = backbone.feature_info.channels()  # type: ignore[union-attr,operator]
    C = cfg.dim
    refiner = None
    if cfg.refine_dim > 0:                       # the stride-2 level comes first
        refiner = MaskRefiner(channels[0], C, cfg.refine_dim, cfg.num_classes)
        channels = channels[1:]
    n = len(channels)
    gate = None
    if cfg.kind_gate:
        if not cfg.kinds:
            raise ValueError("model.kind_gate=true but model.kinds is empty: training fills it "
                             "from the train split's categories (or list them in model.kinds)")
        own = cfg.gate_audio == "own"
        gate = KindGate(build_backbone(cfg.backbone.name, cfg.backbone.out_indices,
                                       cfg.backbone.weights),
                        cfg.audio.embed_dim if own else C, cfg.kinds, stride=cfg.gate_stride,
                        compete=cfg.gate_compete, split=cfg.gate_split,
                        views=cfg.gate_views, blank=cfg.gate_blank, own_audio=own,
                        audio_encoder=build_audio(cfg) if own and with_audio_encoder else None)

    def qsca(k: int) -> QSCA:  # the finest stage's audio token is discarded (docs/pcmanet.md)
        return QSCA(C, cfg.num_heads, cfg.head_dim, cfg.scrambled_tokens, cfg.query_grad,
                    cfg.gather_max_ratio, emits_audio=k > 0)

    return PCMANet(
        backbone=backbone,
        audio_encoder=build_audio(cfg) if with_audio_encoder else None,
        audio_proj=nn.Linear(cfg.audio.embed_dim, C),
        lateral=nn.ModuleList(conv_bn_relu(ch, C, 3) for ch in channels),
        avga=nn.ModuleList(AVGA(C, cfg.groups) for _ in range(n)),
        qsca=nn.ModuleList(qsca(k) for k in range(n)),
        gf=nn.ModuleList(GuidedFusion(C, has_coarser=k < n - 1) for k in range(n)),
        heads=nn.ModuleList(output_head(C, cfg.head_hidden, cfg.num_classes) for _ in range(n)),
        num_frames=cfg.num_frames,
        threshold=cfg.threshold,
        freeze_audio=cfg.audio.frozen,
        refiner=refiner,
        gate=gate,
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
