"""Feature extractors for feature-driven registration (ConvexAdam on features).

An extractor is called with the pair, ``extractor(fixed, moving, fixed_mask=None,
moving_mask=None)`` on (D, H, W) tensors, and returns ``(fixed_features, moving_features)``,
each (C, D, H, W) float32 on its device (see :class:`FeatureExtractor`). Build one from a spec,
``get_extractor("NAME[:ARG][,key=value...]", device)``:

- ``mind[,radius=1,dilation=2]``: MIND-SSC (:mod:`.handcrafted`).
- ``intensity[,norm=robust]``: the normalised image (:mod:`.handcrafted`).
- ``ckpt:PATH[,scale=1,mind=false,window=128,overlap=0.8,blend=gaussian,norm=minmax,batch=2]``:
  a 3-D network, sliding-window inference (:mod:`.volume`).
- ``slice2d:PATH[,every=1,axis=0,size=none,batch=16,scale=1,norm=minmax]``: a 2-D encoder
  slice by slice, every k-th slice encoded and the rest interpolated (:mod:`.slicewise`).

Every extractor takes ``pca=d``: joint PCA of fixed and moving features to d channels
(:mod:`.pca`). Networks come in feature checkpoints (:mod:`.checkpoint`), whose defaults sit
between the built-in defaults and the spec's options.
"""

from registration.features.base import FeatureExtractor, normalize_intensity
from registration.features.checkpoint import (FORMAT, load_feature_module, save_feature_checkpoint,
                                              save_feature_torchscript)
from registration.features.pca import PCABasis, fit_joint_pca, joint_pca, project
from registration.features.registry import EXTRACTOR_NAMES, describe_extractors, get_extractor
from registration.features.spec import Spec, parse_spec

__all__ = ["EXTRACTOR_NAMES", "FORMAT", "FeatureExtractor", "PCABasis", "Spec", "describe_extractors",
           "fit_joint_pca", "get_extractor", "joint_pca", "load_feature_module", "normalize_intensity",
           "parse_spec", "project", "save_feature_checkpoint", "save_feature_torchscript"]
