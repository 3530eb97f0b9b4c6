"""A `mage` model for lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval), the harness most people run.

Registration, for the lmms-eval versions that exist:
- `@register_model("mage")` (lmms-eval ≤ 0.3's registry; still present in 0.7);
- lmms-eval ≥ 0.7 resolves `--model` through its registry v2: the entry point group `lmms_eval.models`
  (`mage = evaluation.lmms_eval_adapter:lmms_eval_manifest` in setup.cfg), or `register_with_lmms_eval()` in-process;
- `python -m evaluation.lmms_eval_adapter <lmms-eval arguments>` registers and runs lmms-eval's CLI, so
  `python -m evaluation.lmms_eval_adapter --model mage --model_args pretrained=PATH --tasks pope` works without it.

Prompts follow the same vicuna_v1 template as `mage eval` (the image first, then lmms-eval's context). Note that
lmms-eval's own scorers differ from the official scripts (docs/evaluation.md, "Scoring conventions"): numbers from
`mage eval` are the reference.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

try:
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
    from lmms_eval.api.registry import register_model
except ImportError as error:  # pragma: no cover - exercised only without lmms-eval
    raise ImportError(
        "evaluation.lmms_eval_adapter needs lmms-eval: `pip install lmms-eval` (a separate environment is advised: it "
        f"pins many packages). Original error: {error}"
    ) from error

import torch

from inference import encode_left_padded

from .cli import load_model
from .runner import continuation_logprobs

MODEL_NAME = "mage"
CLASS_PATH = "evaluation.lmms_eval_adapter.Mage"


@register_model(MODEL_NAME)
class Mage(lmms):
    """lmms-eval model `mage`: `--model_args pretrained=PATH[,device=cpu,dtype=float32,batch_size=8]`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int | str = 128,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(
                f"unknown model_args for mage: {sorted(kwargs)}; known: pretrained, device, dtype, batch_size, "
                "max_new_tokens"
            )
        self._model, self.processor = load_model(pretrained, device, dtype)
        self.tokenizer = self.processor.tokenizer
        self.batch_size_per_gpu = int(batch_size)
        self.default_max_new_tokens = int(max_new_tokens)

    @property
    def model(self):
        return self._model

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._model.device

    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _prompt(self, context: str, num_images: int) -> str:
        text = context.replace(self.processor.image_token, "").strip()
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy (or sampled, if the task asks) answers, batched with left padding, cut at the task's `until`."""
        return self._generate_all([r.args for r in requests])

    def _generate_all(self, args: list[tuple]) -> list[str]:
        outputs: list[str] = []
        for begin in tqdm(range(0, len(args), self.batch_size), desc="mage", disable=self.rank != 0):
            chunk = args[begin : begin + self.batch_size]
            groups: dict[str, list[int]] = {}
            for i, (_, gen_kwargs, *_rest) in enumerate(chunk):
                groups.setdefault(repr(sorted(gen_kwargs.items())), []).append(i)
            texts: dict[int, str] = {}
            for indices in groups.values():
                for i, text in zip(indices, self._generate([chunk[i] for i in indices])):
                    texts[i] = text
            outputs.extend(texts[i] for i in range(len(chunk)))
        return outputs

    def _generate(self, chunk) -> list[str]:
        gen_kwargs = dict(chunk[0][1])
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        images, prompts = [], []
        for context, _, doc_to_visual, doc_id, task, split in chunk:
            visuals = [v for v in (doc_to_visual(self._doc(task, split, doc_id)) or []) if v is not None]
            images.extend(v.convert("RGB") for v in visuals)
            prompts.append(self._prompt(context, len(visuals)))
        inputs = encode_left_padded(self._model, self.processor, prompts, images)
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        sample = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = self._model.generate(
                **inputs,
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.default_max_new_tokens)),
                num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **sample,
            )
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for stop in until:
            texts = [t.split(stop)[0] if stop else t for t in texts]
        return [t.strip() for t in texts]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """`(mean negative log-likelihood of the continuation's tokens, is greedy)` per request.

        lmms-eval's `multiple_choice` scorer picks `argmin` of the first value because its models (e.g. `llava_hf`)
        return the continuation *loss* — we return the same quantity, so the ranking equals `mage eval --scoring
        likelihood` (mean per-token log-likelihood). The continuation carries its own leading space.
        """
        results = []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in (r.args for r in requests):
            doc = self._doc(task, split, doc_id)
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            visuals = [v.convert("RGB") for v in (doc_to_visual(doc) or []) if v is not None]
            if len(visuals) != 1:
                raise ValueError(
                    f"mage loglikelihood takes one image per request, {task} doc {doc_id} has {len(visuals)}"
                )
            prompt = self._prompt(context, 1)
            sums, counts, greedy = continuation_logprobs(
                self._model, self.processor, [prompt], [str(continuation)], visuals, separator="", greedy=True
            )
            results.append((-sums[0] / counts[0], greedy[0]))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """MAGE answers the first round only (like lmms-eval's reference `dummy` model); later rounds are not asked."""
        return self._generate_all([r.args[:3] + r.args[4:] for r in requests])


def lmms_eval_manifest():
    """Entry point payload for lmms-eval ≥ 0.7 (group `lmms_eval.models`)."""
    from lmms_eval.models.registry_v2 import ModelManifest  # optional

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)


def register_with_lmms_eval() -> None:
    """Make `--model mage` resolvable in this process, on every lmms-eval version that has a registry."""
    try:
        from lmms_eval.models import MODEL_REGISTRY_V2  # optional
    except ImportError:  # older lmms-eval: @register_model above is all it needs
        return
    MODEL_REGISTRY_V2.register_manifest(lmms_eval_manifest(), overwrite=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m evaluation.lmms_eval_adapter …` = lmms-eval's CLI with `mage` registered."""
    register_with_lmms_eval()
    from lmms_eval.__main__ import cli_evaluate  # optional

    sys.argv = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
