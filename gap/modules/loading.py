"""Loading a causal LM and its tokenizer: hub id, local directory, GGUF file, or built in-process.

Every model leaves here in the state GAP needs: dropout off, a pad token, and no quantisation metadata,
so a model dequantised from GGUF trains and saves as an ordinary Hugging Face checkpoint.
"""
import json
import os
import zipfile
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from gap.errors import ConfigError, DataError, ModelLoadError
from gap.hub import hub_endpoint, reachable
from gap.memory.arch import check_gguf
from gap.random_init import byte_tokenizer, random_init_config
from gap.schema import DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
UNSUPPORTED_FAMILIES = {  # model type -> why the evaluation cannot score or decode it exactly
    "rwkv": "its forward ignores the attention mask, so left-padded batches would be scored with their padding",
    "recurrent_gemma": "it keeps its recurrent state inside the model, not in a cache that decoding can continue",
    "minimax": "it takes only a cache of its own class, which decoding cannot continue",
}


def check_model_config(model_cfg) -> None:
    """Refuse a model entry that cannot load, before anything is read from disk or the network: a GGUF file
    or a local model folder that is not whole (`check_model_folder`), a tokenizer folder without its files."""
    if model_cfg.get("random_init") is None and not model_cfg.get("path"):
        raise ConfigError(f"model {model_cfg.name!r} names no model.path (a hub id or a local directory)")
    if model_cfg.get("gguf_file"):
        check_gguf(Path(model_cfg.path) / model_cfg.gguf_file)
    elif model_cfg.get("random_init") is None and Path(model_cfg.path).is_dir():
        check_model_folder(Path(model_cfg.path), tokenizer=model_cfg.get("tokenizer") is None)
    if model_cfg.get("tokenizer") is not None:
        if not Path(model_cfg.tokenizer.path).is_dir():
            raise ConfigError(f"tokenizer folder not found: {model_cfg.tokenizer.path} (for the OPT-style "
                              f"tokenizer run `make tokenizer-opt`)")
        check_tokenizer_folder(Path(model_cfg.tokenizer.path))


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json")
AGAIN = "the download or copy is incomplete or damaged: copy or download the model again"


def _json_file(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {AGAIN}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not whole JSON ({type(err).__name__}: {err}); {AGAIN}") from None
    if not isinstance(document, dict):
        raise DataError(f"{path}: expected a JSON object; {AGAIN}")
    return document


def _check_safetensors(path: Path) -> None:
    """The header must parse and its tensors end where the file ends (a file cut short does not)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        try:
            if not 0 < length <= size - 8:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(f.read(length))
            end = 8 + length + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise DataError(f"{path}: not a safetensors file ({err}); {AGAIN}") from None
    if end != size:
        raise DataError(f"{path}: {size} bytes where its header describes {end}; {AGAIN}")


def _check_weights(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: missing; {AGAIN}")
    if path.suffix == ".safetensors":
        _check_safetensors(path)
        return
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"  # torch's format since 1.6, whose directory is at the end of the file
    if zipped:
        try:
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{path}: not a whole PyTorch file ({err}); {AGAIN}") from None


def check_model_folder(folder: Path, tokenizer: bool) -> None:
    """Refuse a local model folder (`save_pretrained`'s layout) whose files cannot make a model, naming the
    file: config.json missing or not whole JSON; no weights, a weights file cut short (a safetensors file
    whose tensors end past its end, a torch file whose zip directory is gone) or a shard its index lists
    missing; with `tokenizer`, the tokenizer's files (`check_tokenizer_folder`). Reads headers only."""
    _json_file(folder / "config.json")
    weights = [folder / name for name in WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise DataError(f"{folder}: no model weights ({', '.join(WEIGHTS)}); {AGAIN}")
    for path in weights:
        if path.name.endswith(".index.json"):
            shards = set(_json_file(path).get("weight_map", {}).values())
            for shard in sorted(shards):
                _check_weights(folder / shard)
        else:
            _check_weights(path)
    if tokenizer:
        check_tokenizer_folder(folder)


def check_tokenizer_folder(folder: Path) -> None:
    """A tokenizer file must be there (tokenizer.json, a vocabulary, a sentencepiece model; GPT-2-style
    vocab.json with its merges.txt), and its JSON files whole."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); {AGAIN}")
    if (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file() \
            and not (folder / "merges.txt").is_file():
        raise DataError(f"{folder / 'merges.txt'}: missing (a BPE vocab.json needs it); {AGAIN}")
    for name in TOKENIZER_JSON:
        if (folder / name).is_file():
            _json_file(folder / name)


def _from_pretrained(cls, model_cfg, **kwargs):
    """`cls.from_pretrained` that fails at once, with a clear message, when the hub is needed but down.

    transformers retries an unreachable hub for most of a minute; we first look in the local cache,
    then check that the hub answers before letting it download.
    """
    path = model_cfg.path
    kwargs.update(revision=model_cfg.get("revision"))
    if model_cfg.get("gguf_file"):
        kwargs["gguf_file"] = model_cfg.gguf_file
    if Path(path).exists():
        return cls.from_pretrained(path, **kwargs)
    try:
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not reachable(hub_endpoint()):
        raise ModelLoadError(
            f"model {path!r} is neither a local path nor in the Hugging Face cache, and the hub cannot be "
            f"reached; download it where there is network (it lands in the HF cache) or set model.path "
            f"to a local directory") from None
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"could not load model {path!r}: {err}") from None


def load_tokenizer(model_cfg):
    """The model's tokenizer, padded with EOS when it has no pad token.

    `model.tokenizer`, where given, names the tokenizer apart from the model: `path` (a folder) and the
    keyword arguments of `AutoTokenizer.from_pretrained` (e.g. `tokenizer_type`, special tokens)."""
    if model_cfg.get("tokenizer") is not None:
        kwargs = OmegaConf.to_container(model_cfg.tokenizer, resolve=True)
        tokenizer = AutoTokenizer.from_pretrained(kwargs.pop("path"), **kwargs)
    elif model_cfg.get("random_init") is not None:
        tokenizer = byte_tokenizer()
    else:
        tokenizer = _from_pretrained(AutoTokenizer, model_cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _disable_dropout(model) -> None:
    for key, value in model.config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(model.config, key, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_model(model_cfg, tokenizer):
    """The causal LM of a model entry, in `model.dtype`, ready for GAP."""
    dtype = DTYPES[model_cfg.dtype]
    if model_cfg.get("random_init") is not None:
        torch.manual_seed(model_cfg.random_init.seed)
        model = AutoModelForCausalLM.from_config(random_init_config(model_cfg, tokenizer)).to(dtype)
    else:
        # no hub kernels (transformers >= 5.25 swaps them in by default): they replace the model's own layers,
        # which the engine's exactness and the oneDNN products rely on, and fetch code from the hub
        model = _from_pretrained(AutoModelForCausalLM, model_cfg, dtype=dtype, use_kernels=False)
    if model.config.model_type in UNSUPPORTED_FAMILIES:
        raise ModelLoadError(f"model {model_cfg.path!r} ({model.config.model_type}) cannot be evaluated here: "
                             f"{UNSUPPORTED_FAMILIES[model.config.model_type]}")
    if getattr(model, "hf_quantizer", None) is not None:  # GGUF weights arrive dequantised
        model.hf_quantizer = None
        model.is_quantized = False
        del model.config.quantization_config
    if model.get_input_embeddings().num_embeddings != len(tokenizer):
        # as the authors did: the softmax then runs over exactly the tokenizer's vocabulary
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    _disable_dropout(model)
    return model


def cpu_state_dict(model) -> dict:
    """A copy of the model's weights on the CPU, to restore later (`load_state_dict`)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


_KEPT: dict[str, tuple] = {}  # model entry -> (tokenizer, model, its loaded weights on the CPU)


def _key(model_cfg) -> str:
    return json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)


def kept_tokenizer(model_cfg):
    """The tokenizer `load_pretrained(keep=True)` holds for this entry, else None."""
    return _KEPT.get(_key(model_cfg), (None,))[0]


def load_pretrained(model_cfg, keep: bool = False, tokenizer=None):
    """(tokenizer, model) of a model entry, as loaded from its source (with `tokenizer`, if already
    loaded by `load_tokenizer`).

    With `keep` (the jobs of a sweep that share a process), the model and a CPU copy of its weights stay
    in this process: a later call for the same entry restores those weights into it instead of loading
    again, so each job starts from the unchanged model.
    """
    key = _key(model_cfg)
    if key in _KEPT:
        tokenizer, model, weights = _KEPT[key]
        model.load_state_dict(weights)
        return tokenizer, model
    _KEPT.clear()  # one model at a time
    tokenizer = tokenizer or load_tokenizer(model_cfg)
    model = load_model(model_cfg, tokenizer)
    if keep:
        _KEPT[key] = (tokenizer, model, cpu_state_dict(model))
    return tokenizer, model
