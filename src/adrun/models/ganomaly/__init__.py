"""GANomaly (anomalib's ``Ganomaly``): an encoder-decoder-encoder GAN, scored by latent distance.

Trained from scratch, no pretrained network. Image scores only: pixel metrics are not available.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adrun.models import zoo


class GanomalyConfig(zoo.SizeFloor):
    name: Literal["ganomaly"]
    # Sizes two label tensors only (anomalib's own default kept); the loader's batch is train_batch_size.
    batch_size: int = Field(32, ge=1)
    n_features: int = Field(64, ge=1)
    latent_vec_size: int = Field(100, ge=1)
    extra_layers: int = Field(0, ge=0)
    add_final_conv_layer: bool = True
    wadv: int = 1
    wcon: int = 50
    wenc: int = 1
    lr: float = Field(0.0002, gt=0)
    beta1: float = 0.5
    beta2: float = 0.999


class GanomalySpec(zoo.ZooSpec):
    name = "ganomaly"
    anomalib_class = "anomalib.models.Ganomaly"
    config = GanomalyConfig
    summary = "GAN with an encoder-decoder-encoder generator (Akcay et al. 2018); image scores only"


SPEC = GanomalySpec()
