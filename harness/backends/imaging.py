"""Image preprocessing shared by the ``hf:`` VLM backends and the reference model's training.

One function, so training and evaluation see exactly the same pixels for a tier:
RGB -> square resize to the tier's side (bicubic) -> [0, 1] -> (x - mean) / std, CHW float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(image: Image.Image, size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """A PIL image -> normalised ``[3, size, size]`` float32 tensor."""
    img = image.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def preprocess_batch(images: Sequence[Image.Image], size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    return torch.stack([preprocess(im, size, mean, std) for im in images])


def vision_tokens_for(size: int, patch_size: int, pool: int = 1) -> int:
    """Patch tokens of a square image (no CLS), after optional ``pool x pool`` pooling."""
    side = size // patch_size // pool
    return side * side
