"""jtwin.models: model interface, feature families, the automatic mixture."""
from jtwin.models.interface import FAMILIES, ClipInfo, Feature, Model
