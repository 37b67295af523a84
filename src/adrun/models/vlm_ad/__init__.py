"""VLM-AD (anomalib's ``VlmAd``): a vision-language model asked, image by image, whether it shows an anomaly.

Listed, not run: every backend anomalib offers needs something adrun cannot check or
provide offline. ``llava`` asks a running Ollama server (the ``ollama`` package, the
``llava`` model pulled into it); ``gpt-4o-mini`` calls OpenAI's API (the ``openai``
package and an API key); the ``llava-hf/...`` models load 7B or 13B LLaVA-NeXT weights
through ``transformers`` from the Hugging Face hub. Preflight refuses every VLM-AD entry
in one line that says what it would need, before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from adrun.checks import Check
from adrun.errors import ConfigError
from adrun.models import zoo
from adrun.schema import ModelBase

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

# anomalib's vlm_ad/utils.py ModelName: what each backend needs before a single image is scored.
NEEDS = {
    "llava": "a running Ollama server (pip install ollama; ollama pull llava) on this machine",
    "gpt-4o-mini": "OpenAI's API over the network (pip install openai; an API key in OPENAI_API_KEY)",
    "llava-hf/llava-v1.6-vicuna-7b-hf": "transformers and the 7B model llava-hf/llava-v1.6-vicuna-7b-hf (hub)",
    "llava-hf/llava-v1.6-vicuna-13b-hf": "transformers and the 13B model llava-hf/llava-v1.6-vicuna-13b-hf (hub)",
    "llava-hf/llava-v1.6-mistral-7b-hf": "transformers and the 7B model llava-hf/llava-v1.6-mistral-7b-hf (hub)",
}


class VlmAdConfig(ModelBase):
    name: Literal["vlm_ad"]
    model: Literal[
        "llava",
        "gpt-4o-mini",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava-hf/llava-v1.6-vicuna-13b-hf",
        "llava-hf/llava-v1.6-mistral-7b-hf",
    ] = "llava"
    # anomalib's argument; keep keys out of configs (its ChatGPT backend reads OPENAI_API_KEY).
    api_key: str | None = None
    k_shot: int = Field(0, ge=0)
    hf_model_revision: str | None = None


class VlmAdSpec(zoo.ZooSpec):
    name = "vlm_ad"
    anomalib_class = "anomalib.models.VlmAd"
    config = VlmAdConfig
    summary = "asks a vision-language model (LLaVA, GPT-4o-mini) about each image (Qu et al.); listed only"
    weights = "a VLM: an Ollama server with llava, OpenAI's API, or 7B/13B LLaVA-NeXT weights from the hub"
    offline = "no (adrun does not run it: each backend needs a server, an API or a multi-GB model)"

    def build(self, cfg: Any, exp_dir: Path, evaluator: Evaluator):
        raise ConfigError(_refusal("vlm_ad", cfg))  # preflight refuses first; this guards library callers

    def cell_problems(self, cell: Any) -> list[str]:
        return []  # it never trains; preflight's check refuses it

    def checks(self, cfg: Any, label: str, source: str | None) -> dict[str, Check]:
        return {"weights": Check(False, "not runnable", (_refusal(label, cfg),))}

    def sources(self, cfg: Any) -> dict[str, Any]:
        return {"vlm": cfg.model}


def _refusal(label: str, cfg: Any) -> str:
    return (
        f"{label}: adrun lists VLM-AD but does not run it: model {cfg.model} needs {NEEDS[cfg.model]}; "
        "drop that model entry"
    )


SPEC = VlmAdSpec()
