"""Image encoder: a CNN's last feature map, one token per region.

2-D images go through a timm backbone, 3-D volumes through a MONAI ResNet (``spatial_dims=3``). Both
are built untrained (``pretrained=False``: nothing is ever downloaded) and can start from a local
safetensors checkpoint instead. Region ``(r, c)`` of the last feature map becomes the token named
``"region r,c"`` (``"region d,r,c"`` in 3-D), projected to ``out_dim`` with a learned position
embedding so the fusion core knows where each region lies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders._registry import register_encoder
from encoders.base import ModalityEncoder
from encoders.summaries import image_summary
from encoders.tokens import EncoderBatch, Tokens

_MONAI_RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Settings of :class:`ImageEncoder`.

    Attributes:
        out_dim: token width D.
        backbone: a timm model name for 2-D, a MONAI ResNet (``resnet10`` .. ``resnet152``) for 3-D.
        spatial_dims: 2 for images ``(1, H, W)``, 3 for volumes ``(1, D, H, W)``.
        image_size: every spatial side is resized to this; keep it small in 3-D (e.g. 96).
        checkpoint: optional local ``.safetensors`` file with the backbone's weights.
    """

    out_dim: int = 128
    backbone: str = "resnet18"
    spatial_dims: int = 2
    image_size: int = 224
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"image encoder spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.spatial_dims == 3 and self.backbone not in _MONAI_RESNETS:
            raise ValueError(
                f"image encoder backbone {self.backbone!r}: 3-D volumes use a MONAI ResNet, "
                f"one of {', '.join(_MONAI_RESNETS)}"
            )
        if self.image_size < 8 or self.out_dim < 1:
            raise ValueError(
                f"image encoder needs image_size >= 8 and out_dim >= 1, got {self.image_size} "
                f"and {self.out_dim}"
            )


class ImageEncoder(ModalityEncoder):
    """Region tokens from the last feature map of a CNN.

    Args:
        config: backbone, dimensionality, input size and token width.
    """

    kind: ClassVar[str] = "image"

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        self.backbone = build_backbone(config.backbone, config.spatial_dims)
        if config.checkpoint is not None:
            load_backbone_checkpoint(self.backbone, Path(config.checkpoint))
        channels, self.grid = self._feature_shape()
        self.region_names = [
            "region " + ",".join(map(str, index)) for index in product(*map(range, self.grid))
        ]
        self.projection = nn.Linear(channels, config.out_dim)
        self.position = nn.Parameter(torch.randn(len(self.region_names), config.out_dim) * 0.02)
        self.norm = nn.LayerNorm(config.out_dim)

    def example_samples(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` images of assorted sizes around ``image_size`` with values in [0, 1]."""
        size, dims = self.config.image_size, self.config.spatial_dims
        return [
            rng.random((1, *rng.integers(size // 2, size + size // 2, dims))).astype(np.float32)
            for _ in range(n)
        ]

    def collate(self, samples: Sequence[np.ndarray | Tensor | None]) -> EncoderBatch:
        """Resize every image to ``image_size`` per side; ``None`` becomes a zero image.

        Args:
            samples: per patient, a float32 ``(1, H, W)`` (or ``(1, D, H, W)``) array in [0, 1],
                or None.

        Returns:
            tensors ``image`` (B, 1, S, S) or (B, 1, S, S, S), S = ``image_size``.

        Raises:
            ValueError: an image of the wrong dimensionality or with non-finite values.
        """
        dims, size = self.config.spatial_dims, self.config.image_size
        images = torch.zeros(len(samples), 1, *(size,) * dims)
        for row, sample in enumerate(samples):
            if sample is None:
                continue
            image = torch.as_tensor(np.asarray(sample), dtype=torch.float32)
            if image.dim() != dims + 1 or image.shape[0] != 1:
                expected = "(1, H, W)" if dims == 2 else "(1, D, H, W)"
                raise ValueError(
                    f"image sample {row}: expected a single-channel {expected} array for "
                    f"spatial_dims={dims}, got shape {tuple(image.shape)}"
                )
            if not torch.isfinite(image).all():
                raise ValueError(f"image sample {row}: has non-finite intensities")
            # Antialiasing keeps a 2000-pixel radiograph from aliasing at 224; PyTorch offers it
            # for 2-D only, so volumes are resized trilinearly.
            images[row] = F.interpolate(
                image[None],
                size=(size,) * dims,
                mode="bilinear" if dims == 2 else "trilinear",
                align_corners=False,
                antialias=dims == 2,
            )[0]
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        return EncoderBatch(
            tensors={"image": images},
            present=present,
            names=[list(self.region_names) for _ in samples],
        )

    def sample_summary(self, sample: np.ndarray | Tensor) -> dict[str, float]:
        """Intensity statistics and a 4 x 4 thumbnail (:func:`encoders.summaries.image_summary`)."""
        return image_summary(np.asarray(sample, dtype=np.float32))

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, R, D), R regions; ``mask`` True for present patients."""
        images, present = batch.tensors["image"], batch.present
        values = images.new_zeros(len(batch), len(self.region_names), self.out_dim)
        # Only present images reach the backbone: zero placeholders would skew batch-norm
        # statistics in training.
        if present.any():
            regions = self._feature_map(images[present]).flatten(2).transpose(1, 2)  # (P, R, C)
            values[present] = self.norm(self.projection(regions) + self.position)
        mask = present[:, None].expand(-1, len(self.region_names)).clone()
        return Tokens(values=values, mask=mask, names=batch.names)

    def _feature_map(self, images: Tensor) -> Tensor:
        """(P, C, *grid) last feature map of images in [0, 1] (centred around 0 first)."""
        return self.backbone(images * 2.0 - 1.0)[-1]

    @torch.no_grad()
    def _feature_shape(self) -> tuple[int, tuple[int, ...]]:
        """Channels and grid of the last feature map, from one dry run in eval mode."""
        training = self.backbone.training
        self.backbone.eval()  # a dry run must not move batch-norm running statistics
        size, dims = self.config.image_size, self.config.spatial_dims
        feature_map = self._feature_map(torch.zeros(1, 1, *(size,) * dims))
        self.backbone.train(training)
        return int(feature_map.shape[1]), tuple(int(side) for side in feature_map.shape[2:])


def build_backbone(name: str, spatial_dims: int) -> nn.Module:
    """An untrained single-channel feature extractor whose forward returns a list of feature maps.

    Raises:
        ValueError: ``name`` is not a model of timm (2-D) or a MONAI ResNet (3-D).
    """
    if spatial_dims == 3:
        from monai.networks.nets.resnet import ResNetFeatures

        return ResNetFeatures(name, pretrained=False, spatial_dims=3, in_channels=1)
    import timm

    if not timm.is_model(name):
        raise ValueError(f"image encoder backbone {name!r} is not a timm model; see timm.list_models()")
    return timm.create_model(name, pretrained=False, in_chans=1, features_only=True, out_indices=(-1,))


def load_backbone_checkpoint(backbone: nn.Module, path: Path) -> None:
    """Load a local safetensors checkpoint into ``backbone``.

    Keys the backbone lacks (a classifier head) are ignored. A colour stem (3 input channels) is
    summed to our single channel, which keeps its response to a grey image.

    Raises:
        ValueError: the file is absent, a weight has an incompatible shape, or backbone weights
            are missing from it.
    """
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path}: image checkpoint not found; expected a .safetensors file")
    state = load_file(str(path))
    own = backbone.state_dict()
    loaded = {}
    for key, weight in state.items():
        if key not in own:
            continue
        expected = own[key].shape
        if weight.shape != expected:
            if _is_colour_stem(weight.shape, expected):
                weight = weight.sum(dim=1, keepdim=True)
            else:
                raise ValueError(
                    f"{path}: weight {key!r} has shape {tuple(weight.shape)}, the backbone "
                    f"expects {tuple(expected)}"
                )
        loaded[key] = weight
    lacking = sorted(key for key in own if key not in loaded and "num_batches_tracked" not in key)
    if lacking:
        raise ValueError(
            f"{path}: the checkpoint lacks {len(lacking)} of the backbone's {len(own)} weights, "
            f"e.g. {lacking[:3]}; is it a checkpoint of this backbone?"
        )
    backbone.load_state_dict(loaded, strict=False)


def _is_colour_stem(shape: torch.Size, expected: torch.Size) -> bool:
    """True for a first convolution saved for several input channels where we need one."""
    return (
        len(shape) == len(expected) >= 3
        and expected[1] == 1
        and shape[0] == expected[0]
        and shape[2:] == expected[2:]
    )


_TINY = ImageEncoderConfig(out_dim=13, backbone="test_resnet", image_size=45)


@register_encoder("image")
def image(**config: Any) -> ImageEncoder:
    """The image encoder (a timm ResNet-18 from scratch at 224 pixels by default)."""
    return ImageEncoder(ImageEncoderConfig(**config))


@register_encoder("image-tiny")
def image_tiny(**config: Any) -> ImageEncoder:
    """A tiny image encoder with odd sizes, for tests."""
    return ImageEncoder(replace(_TINY, **config))
