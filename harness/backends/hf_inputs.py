"""The checkpoint's own input conventions for ``hf:`` models: its image processor and its chat
template, where the checkpoint has them (so scores compare with evaluations that use them, such
as lmms-eval's).

- :class:`CheckpointImages`: the checkpoint's image processor (``preprocessor_config.json``)
  with its own resize filter, rescale and normalisation, run at the tier's square side. The PIL
  backend is used whatever is installed, so the pixels do not depend on whether torchvision is
  there. Without a processor config the harness's :func:`harness.backends.imaging.preprocess`
  (square bicubic resize, CLIP mean/std) is used.
- :class:`ChatFormat`: the tokenizer's chat template renders one user turn (an image part when the
  sample has an image, then the prompt) with the generation prompt; the template's one image
  placeholder token becomes the tier's number of vision tokens. A ``prompt_template`` set in the
  model's harness config (anything but ``{prompt}``) takes precedence over the chat template.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.errors import HarnessError


class CheckpointImages:
    """A transformers image processor producing ``[n, 3, side, side]`` pixel values at a tier."""

    def __init__(self, processor, name: str):
        self.processor = processor
        self.name = name

    @classmethod
    def load(cls, path: str, name: str) -> "CheckpointImages | None":
        local = Path(path).is_dir()
        if local and not (Path(path) / "preprocessor_config.json").is_file():
            return None
        from transformers import AutoImageProcessor

        try:
            return cls(AutoImageProcessor.from_pretrained(path, backend="pil"), name)
        except OSError:  # a cached hub id without a processor config
            return None
        except Exception as exc:
            raise HarnessError(f"{name}: the checkpoint's image processor does not load ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); fix or remove its preprocessor_config.json")

    def _size_kwargs(self, side: int) -> dict:
        size = self.processor.size
        shortest = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
        if shortest:
            kw = {"size": {"shortest_edge": side}}
            if getattr(self.processor, "do_center_crop", False):
                kw["crop_size"] = {"height": side, "width": side}
            return kw
        return {"size": {"height": side, "width": side}}

    def pixel_values(self, images, side: int) -> torch.Tensor:
        out = self.processor(images=list(images), return_tensors="pt", **self._size_kwargs(side))["pixel_values"]
        if tuple(out.shape[-2:]) != (side, side):
            raise HarnessError(f"{self.name}: its image processor gives {tuple(out.shape[-2:])} pixels at a tier of side "
                               f"{side}; set the tiers' image_size in the model's harness config to sizes it keeps square")
        return out


class ChatFormat:
    """Input ids through the tokenizer's chat template (see the module docstring)."""

    def __init__(self, tokenizer, image_token_id: int | None, name: str):
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.name = name

    @classmethod
    def of(cls, tokenizer, prompt_template: str, image_token_id: int | None, name: str) -> "ChatFormat | None":
        if prompt_template != "{prompt}" or not getattr(tokenizer, "chat_template", None):
            return None
        return cls(tokenizer, image_token_id, name)

    def render(self, prompt: str, has_image: bool) -> str:
        if self.image_token_id is None:  # a text model: plain string content
            content = prompt
        else:
            content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": prompt}]
        try:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as exc:
            raise HarnessError(f"{self.name}: its chat template fails on a user turn ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); set prompt_template in the model's harness config")

    def input_ids(self, prompt: str, n_vision: int) -> list[int]:
        text = self.render(prompt, n_vision > 0)
        ids = [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, int(bos))  # as the harness's own prompts: a BOS first when the tokenizer has one
        if self.image_token_id is None:
            return ids
        places = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(places) != (1 if n_vision else 0):
            raise HarnessError(f"{self.name}: its chat template placed {len(places)} image tokens for "
                               f"{'one image' if n_vision else 'no image'}; set prompt_template in the model's harness config")
        if not n_vision:
            return ids
        at = places[0]
        return ids[:at] + [self.image_token_id] * n_vision + ids[at + 1:]
