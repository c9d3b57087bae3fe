"""Model families as adapters: how `SequencePolicy` talks to each kind of Hugging Face image-to-text model.

A family is a module with the same few members (`encoder_decoder.py` is the simplest to read):

    MODEL_CLASSES = {model_type: HF class}       the `config.model_type`s it serves, and the class that loads each
    special_ids(model, tokenizer)               -> (start id or None, stop ids, pad id), from config + generation config
    prepare(policy)                             what is computed once per policy (a VLM: its prompt's token ids)
    banned_token_ids(policy)                    ids never sampled (a VLM's image placeholder): -inf in sampling and
                                                teacher forcing alike, so log-probs stay exact
    pixel_values(policy, images)                -> (B, ...) through the model's own image processor
    encode(policy, pixel_values)                -> context: once per image, shared by the image's k samples
    first_step(policy, context)                 -> (logits (B, V), cache, step_context): the first decoder pass
    next_step(policy, step_context, tokens (N, 1), cache, position) -> (logits (N, V), cache)
    teacher_forced_logits(policy, pixel_values, tokens (N, T), k) -> logits (N, T, V), row i*k + j from image i

`step_context` is repeated k times per image by the policy (None: everything lives in the cache). Adding a family is
one module, its line in FAMILIES and a tiny model in tests/tiny_models.py (the policy tests then run on it).
"""

from __future__ import annotations

from pathlib import Path

from vrlhf.errors import ModelError
from vrlhf.families import encoder_decoder, git, vlm
from vrlhf.hub import is_hub_id, unreachable

ADAPTERS = (encoder_decoder, git, vlm)
FAMILIES = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.MODEL_CLASSES}


def supported() -> str:
    return ", ".join(FAMILIES)


def adapter_of(model) -> object:
    """The adapter module of a model instance; TypeError for a model class no family serves."""
    base = getattr(model, "get_base_model", lambda: model)()  # PEFT wraps the model
    adapter = FAMILIES.get(getattr(base.config, "model_type", None))
    if adapter is None or not isinstance(base, adapter.MODEL_CLASSES[base.config.model_type]):
        classes = sorted({c.__name__ for a in ADAPTERS for c in a.MODEL_CLASSES.values()})
        raise TypeError(f"unsupported model class {type(base).__name__}; supported: {', '.join(classes)}")
    return adapter


def model_type(path: str | Path) -> str:
    """`config.model_type` of a local model directory or hub id, checked against the supported families."""
    config = load_config(path)
    if config.model_type not in FAMILIES:
        raise ModelError(f"{path}: a {config.model_type!r} model ({type(config).__name__}), which no family here "
                         f"serves; supported model types: {supported()}")
    return config.model_type


def load_config(path: str | Path):
    """The model's config; ModelError (one line) for a folder that is no model or an unreachable hub id."""
    from transformers import AutoConfig

    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"{path}: a file, not a model directory")
        if not (local / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json: expected a Hugging Face model saved "
                             f"with save_pretrained, or a hub id)")
    elif not is_hub_id(path):
        raise ModelError(f"{path}: no such model directory")
    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as error:
        if not local.exists():
            raise ModelError(unreachable("model directory", str(path), error)) from None
        raise ModelError(f"{path}/config.json: not a model config this transformers reads "
                         f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
                         ) from None


def load_model(path: str | Path, **kwargs):
    """(model, adapter) for the model at `path`, with the HF class its family names, in float32 unless `dtype` says.

    float32 because these weights are trained: hub VLMs are saved in bf16, and transformers loads the saved dtype,
    where AdamW's updates at lr 5e-5 mostly round away (bf16 keeps 8 bits of mantissa); mixed precision
    (--mixed_precision bf16) then runs the matmuls in bf16 over fp32 master weights. With LoRA only the adapters are
    trained (PEFT keeps them in fp32), so a frozen base could be loaded in bf16 to halve its memory
    (`dtype=torch.bfloat16`); the tuner loads fp32 in both cases (docs/TUNER.md: memory)."""
    import torch

    kind = model_type(path)
    adapter = FAMILIES[kind]
    kwargs.setdefault("dtype", torch.float32)
    try:
        return adapter.MODEL_CLASSES[kind].from_pretrained(str(path), **kwargs), adapter
    except (OSError, ValueError) as error:
        if not Path(path).exists():
            raise ModelError(unreachable("model directory", str(path), error)) from None
        raise ModelError(f"{path}: cannot load the {kind} weights ({str(error).strip().splitlines()[0]})") from None


def load_processing(path: str | Path, adapter) -> tuple:
    """(processor or None, tokenizer or None, image processor or None) saved with the model at `path`.

    A local folder holds what it holds (our own older policies have a tokenizer and no image processor: they keep
    their normalisation in policy.json); a hub id is asked for each. A VLM needs its full processor."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    local = Path(path)
    files = {p.name for p in local.iterdir()} if local.is_dir() else None

    def has(*names):
        return files is None or any(name in files for name in names)

    def attempt(loader):
        try:
            return loader.from_pretrained(str(path))
        except (OSError, ValueError, KeyError, TypeError, ImportError):
            return None

    processor = attempt(AutoProcessor) if adapter is vlm and has("processor_config.json", "preprocessor_config.json") \
        else None
    if adapter is vlm and (processor is None or not hasattr(processor, "image_processor")):
        raise ModelError(f"{path}: a vision-language model needs its processor (processor_config.json with an image "
                         f"processor and a tokenizer), saved with processor.save_pretrained beside the model")
    if processor is not None:
        return processor, processor.tokenizer, processor.image_processor
    tokenizer = attempt(AutoTokenizer) if has("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt") \
        else None
    image_processor = attempt(AutoImageProcessor) if has("preprocessor_config.json", "processor_config.json") \
        else None
    return None, tokenizer, image_processor
