"""Ready models: a spherical CNN (classification/regression of whole maps)
and a spherical U-Net (one output per vertex).

Both build the pyramid of samplings once, at construction, with one graph
operator per level shared by that level's layers (:class:`SphereModel`).
``model.save(path)`` writes the class, the sampling's state, the arguments
and the weights; :func:`load` rebuilds the model (large graphs come from the
graph cache on disk). Skies too large for one pass: :func:`predict_in_patches` runs a per-pixel
model patch by patch with a border of context (:mod:`graphsphere.models.patches`).

Example
-------
>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> model = gs.models.SphericalCNN(s, in_channels=1, out_features=2, channels=(8, 16), K=3)
>>> model(torch.randn(4, s.npix, 1)).shape
torch.Size([4, 2])
>>> unet = gs.models.SphericalUNet(s, in_channels=2, out_channels=3, channels=(8, 16), K=3)
>>> unet(torch.randn(4, s.npix, 2)).shape
torch.Size([4, 768, 3])
"""

from .base import MODEL_FORMAT, ModelFileError, SphereModel, read_model_file
from .cnn import SphericalCNN
from .patches import PatchPredictor, predict_in_patches, receptive_border, sky_patches
from .registry import model_class, model_names, register_model
from .unet import SphericalUNet

__all__ = ["SphericalCNN", "SphericalUNet", "SphereModel", "ModelFileError", "MODEL_FORMAT", "load", "from_state",
           "register_model", "model_class", "model_names", "predict_in_patches", "PatchPredictor", "sky_patches",
           "receptive_border"]


def from_state(state: dict, map_location=None) -> SphereModel:
    """Rebuild any registered model from :meth:`SphereModel.to_state`."""
    return SphereModel.from_state(state, map_location=map_location)


def load(path, map_location="cpu") -> SphereModel:
    """Load any registered model from a file written by ``model.save``."""
    return SphereModel.from_state(read_model_file(path), map_location=map_location)
