"""Generic building blocks shared by the fusion blocks and the decoder."""

from pcmanet.layers.conv import conv_bn_relu

__all__ = ["conv_bn_relu"]
