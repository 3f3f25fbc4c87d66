"""jtwin.models: the model interface, feature families, the automatic mixture
and the mean-field posterior."""
from jtwin.models.interface import FAMILIES, ClipInfo, Feature, Model
from jtwin.models.mixture import make_mixture_model
from jtwin.models.posterior import MeanFieldParams

__all__ = ["FAMILIES", "ClipInfo", "Feature", "MeanFieldParams", "Model", "make_mixture_model"]
