"""The typed shape of a composed run config: every value a run reads is checked here, before any data
or model is read, and a wrong one is refused naming its key, the value and what is valid.

Sections allow keys beyond those listed (model entries and Lightning's Trainer take many more)."""
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from gap.errors import ConfigError

NULL_ARM = "random_direction"  # the method whose steps take a random direction (gap.modules.objectives)

Positive = Annotated[int, Field(gt=0, strict=True)]
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # model.dtype: the torch dtypes of these names
Probability = Annotated[float, Field(ge=0, lt=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class RandomInit(_Section):
    family: Literal["llama", "opt"] = "llama"  # what `gap.random_init` builds
    hidden_size: Positive
    layers: Positive
    heads: Positive


class Model(_Section):
    name: str
    path: str | None = None
    gguf_file: str | None = None
    dtype: Literal[DTYPE_NAMES]
    eval_batch_size: Positive
    max_length: Annotated[int, Field(ge=2, strict=True)]
    random_init: RandomInit | None = None


class Corpus(_Section):
    name: str
    index: Annotated[int, Field(ge=0, strict=True)] = 0
    num_samples: Positive = 1
    length: Annotated[int, Field(ge=2, strict=True)] | None = None  # random_tokens: tokens per sample


class Eval(_Section):
    limit: Positive | None
    split: Literal["validation", "test"]
    prompt_style: Literal["gap", "harness"]
    batch_size: Positive
    max_batch_tokens: Positive | Literal["auto"] | None
    share_context: StrictBool
    max_new_tokens: Positive
    overwrite: StrictBool
    heldout: StrictBool


class Optim(_Section):
    lr: Annotated[float, Field(gt=0)]
    betas: tuple[Probability, Probability]


class LoRA(_Section):
    enabled: StrictBool
    r: Positive
    alpha: Annotated[float, Field(gt=0)]
    target_modules: list[str] | None = None


class Method(_Section):
    name: Literal["gap", "gap_legacy", "npo", "mle", "random_direction", "none"]  # random_direction: NULL_ARM
    beta: Annotated[float, Field(gt=0)] | None = None  # npo
    direction_seed: str | None = None  # random_direction
    lora: LoRA | None = None


class Trainer(_Section):
    max_epochs: Positive
    precision: str | int


class Tasks(_Section):
    include: list[str]  # may be empty where lm_eval.tasks is not (gap.train.check_config)


class LmEval(_Section):
    tasks: list[str]
    include_path: str | None = None
    num_fewshot: Annotated[int, Field(ge=0, strict=True)] | None = None
    select: StrictBool
    bootstrap_iters: Annotated[int, Field(ge=0, strict=True)]


class Tracking(_Section):
    samples: Annotated[int, Field(ge=0, strict=True)]
    upload_checkpoints: StrictBool


class RunConfig(_Section):
    seed: Annotated[int, Field(strict=True)]
    save_checkpoint: StrictBool
    model: Model
    corpus: Corpus
    eval: Eval
    optim: Optim
    method: Method
    trainer: Trainer
    tasks: Tasks
    lm_eval: LmEval
    tracking: Tracking


def _key(loc: tuple) -> str:
    """`('optim', 'betas', 0)` -> `optim.betas[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_config(cfg) -> None:
    """Raise `ConfigError` for the first value of the wrong type or range in a composed config (the
    sections the schema names, resolved)."""
    from omegaconf import OmegaConf

    absent = object()

    def value(key: str):
        found = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False)
        return OmegaConf.to_container(found, resolve=True) if OmegaConf.is_config(found) else found

    config = {}
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, _Section):  # only the keys the schema names
            found = {key: value(f"{name}.{key}") for key in section.model_fields}
            config[name] = {key: v for key, v in found.items() if v is not absent}
        elif (found := value(name)) is not absent:
            config[name] = found
    try:
        RunConfig.model_validate(config)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        where = [_key(_keys(e["loc"])) for e in errors]
        first = errors[0]
        # a union's branches each say what they take: "should be a valid integer or should be 'auto'"
        wanted = list(dict.fromkeys(e["msg"].lower() for e, w in zip(errors, where) if w == where[0]))
        shown = "missing" if first["type"] == "missing" else repr(first.get("input"))
        raise ConfigError(f"{where[0]}={shown} is not valid: {' or '.join(wanted)}") from None


def _keys(loc: tuple) -> tuple:
    """The config keys of an error's location, without the union branches pydantic adds ('int', 'none',
    'constrained-int', "literal['auto']", 'function-after[...]')."""
    return tuple(p for p in loc if not (isinstance(p, str) and (p in ("int", "none", "str", "float", "bool")
                                                                  or p.startswith(("function-", "constrained-",
                                                                                   "literal[")))))
