"""A small random checkpoint of the *real* MolmoE-1B remote classes, built at test time.

The remote files are read from ``../shared/molmoe-remote`` (beside the repository) and linked,
never copied, into a temporary checkpoint folder; only sizes change from the real config
(d_model 128, n_heads 4, vision MLP 128 wide, 9 ViT layers; the ViT width stays 1024 because the
remote vision backbone sizes ``pad_embed`` from its config defaults). ``save_pretrained`` fails on
this config, so the weights are written with safetensors directly. The remote ``__init__`` leaves the
token embeddings (initialised with their own ``reset_parameters``) and the padding embedding zero.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REMOTE = Path(__file__).resolve().parents[1].parent / "shared" / "molmoe-remote"
SIZES = {"d_model": 128, "n_heads": 4}
VISION_SIZES = {"image_mlp_dim": 128, "image_num_layers": 9}


def remote_hashes() -> dict[str, str]:
    import hashlib

    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(REMOTE.glob("*"))}


REMOTE_HASHES = remote_hashes()  # at import, before any test loads the remote code


def torchvision_reason() -> str | None:
    """Why the real image processor cannot be imported here, or None when it can."""
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed (pip install -e '.[molmoe]'; see README: MolmoE on a CPU-only torch)"
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # a CUDA torchvision next to a CPU torch: operator torchvision::nms does not exist
        return f"torchvision does not import next to this torch ({str(exc).splitlines()[0][:80]})"
    return None


def require_remote() -> None:
    if not (REMOTE / "modeling_molmoe.py").is_file():
        pytest.skip(f"the MolmoE remote files are not at {REMOTE}")
    if importlib.util.find_spec("einops") is None:
        pytest.skip("einops is not installed (pip install -e '.[molmoe]')")


def write_checkpoint(folder: Path, seed: int = 0, weights: bool = True) -> Path:
    """The small checkpoint in ``folder``: links to the remote files, a resized config.json and
    (when ``weights``) random weights of the real ``MolmoForCausalLM``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder.mkdir(parents=True, exist_ok=True)
    for f in REMOTE.iterdir():
        if f.name not in ("README.md", "config.json"):
            (folder / f.name).symlink_to(f)
    cfg = json.loads((REMOTE / "config.json").read_text())
    cfg.update(SIZES)
    cfg["vision_backbone"].update(VISION_SIZES)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    if weights:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        cls = get_class_from_dynamic_module(config.auto_map["AutoModelForCausalLM"], folder)
        torch.manual_seed(seed)
        model = cls(config)
        model.model.transformer.wte.reset_parameters()  # the remote __init__ leaves the embeddings zero
        with torch.no_grad():
            model.model.vision_backbone.pad_embed.normal_(0.0, 0.02)  # and the crop-padding embedding
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors",
                  metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def molmoe_checkpoint(tmp_path_factory) -> Path:
    require_remote()
    return write_checkpoint(tmp_path_factory.mktemp("molmoe") / "molmoe-small")


class TextOnly:
    """Prompt -> ``[bos] + tokenizer(" User: <prompt> Assistant:")`` with the checkpoint's real
    tokenizer (the text framing of Molmo's processor, without images)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def text_ids(self, text) -> list[int]:
        bos = self.tokenizer.bos_token_id or self.tokenizer.eos_token_id
        return [bos] + self.tokenizer.encode(" User: " + text + " Assistant:", add_special_tokens=False)

    def process(self, text, images=None, **_):
        import torch

        assert images is None, "TextOnly has no image path"
        return {"input_ids": torch.tensor(self.text_ids(text))}


class StandInProcessor(TextOnly):
    """A stand-in for Molmo's processor (which needs torchvision) with its output schema: ``images``
    [crops, 576, 588] (random pixels seeded by the image size), ``image_masks`` [crops, 576] (the
    last crop's last patch row partly padding), ``image_input_idx`` [crops, 144] (the positions of
    the crops' patch tokens, which follow the BOS). Crops: 1 + (1 if max_crops > 2 and the image is
    wider than 100 px): tiers and images change the crop count, as with the real processor."""

    PATCH_ID = 50281  # <im_patch>

    def process(self, text, images=None, images_kwargs=None, **_):
        import torch

        if images is None:
            return super().process(text)
        image = images[0]
        crops = 1 + int((images_kwargs or {}).get("max_crops", 2) > 2 and image.size[0] > 100)
        g = torch.Generator().manual_seed(image.size[0] * 1000 + image.size[1])
        pixels = torch.rand((crops, 576, 588), generator=g) * 2 - 1
        masks = torch.ones((crops, 576))
        masks[-1, -24:] = 0.5
        ids = self.text_ids(text)
        idx = torch.arange(crops * 144).view(crops, 144) + 1
        ids = ids[:1] + [self.PATCH_ID] * (crops * 144) + ids[1:]
        return {"input_ids": torch.tensor(ids), "images": pixels, "image_masks": masks, "image_input_idx": idx}
