"""Shape-annotated tensor aliases shared by the measures (glossary: batch layer head query key d_model d_head)."""

from jaxtyping import Bool, Float
from torch import Tensor

MixingMatrix = Float[Tensor, "batch query key"]
HeadMixingMatrix = Float[Tensor, "batch head query key"]
LayerMixing = Float[Tensor, "batch layer query key"]
TokenMask = Bool[Tensor, "batch key"]
