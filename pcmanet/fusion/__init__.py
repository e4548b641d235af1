"""The paper's fusion blocks: AVGA, QSCA, CIM."""

from pcmanet.fusion.avga import AVGA
from pcmanet.fusion.cim import confidence, progress, uncertain_mask
from pcmanet.fusion.qsca import QSCA, AudioState

__all__ = ["AVGA", "QSCA", "AudioState", "confidence", "progress", "uncertain_mask"]
