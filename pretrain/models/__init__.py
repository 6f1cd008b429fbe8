"""Networks the pretraining recipes train: the anatomix UNet and its building blocks."""

from pretrain.models.blocks import ConvNormAct, ConvStack
from pretrain.models.unet import LayerInfo, UNet

__all__ = ["ConvNormAct", "ConvStack", "LayerInfo", "UNet"]
