"""Export a reward model as Python reward functions for other trainers: one function per
objective with TRL's ``reward_funcs`` signature, and verl's custom ``compute_score``.

``morm rm export NAME --as reward-function --out DIR`` writes::

    DIR/morm_reward.py     the functions (the template is reward/exported_module.py)
    DIR/README.md          how to train with them in TRL's GRPOTrainer and in verl
    DIR/morm_export.json   objectives, function names, weights, standardization, source
    DIR/model/             the reward model folder: config.json, heads, tokenizer, and each
                           backbone's weights when there is a fine-tuned one per objective
    DIR/backbone/          the (first) backbone as the model holds it, pretrained or
                           fine-tuned, saved by transformers (safetensors)

The module loads DIR/model with `load_reward_model` and scores with `scoring.score`, the
project's own code, so its rewards equal ``morm score``'s; before DIR is written the export
loads the module from its staging folder and checks this on probe texts.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from morm_explorer import __version__
from morm_explorer.errors import MormError
from morm_explorer.reward import exported_module
from morm_explorer.reward.artifact import load_reward_model
from morm_explorer.reward.config import read_config
from morm_explorer.reward.export import PROBES, _check_target, scalarization
from morm_explorer.reward.model import RewardModel
from morm_explorer.weight_presets import WeightPreset, builtin_presets, list_presets
from morm_explorer.workspace import Workspace, atomic_write_text, replace_dir

FORMAT = "morm-reward-function"
MODULE = "morm_reward.py"
TEMPLATE = Path(exported_module.__file__)
_SETTINGS = re.compile(r"^# -- settings .*?^# -- end of settings[^\n]*\n", re.M | re.S)


def find_preset(ws: Workspace, name: str, objectives: list[str]) -> WeightPreset:
    """A saved weight preset of that name, else a built-in one (equal, <objective>-first);
    only weighted sums without constraints, which is what trainers compute."""
    presets = {p.name: p for p in builtin_presets(objectives)}
    presets.update({p.name: p for p in list_presets(ws)})
    if name not in presets:
        raise MormError(f"no weight preset named {name!r}; presets: "
                        f"{', '.join(sorted(presets))}", field="preset")
    preset = presets[name]
    if preset.scalarizer != "weighted_sum":
        raise MormError(f"preset {name!r} uses the {preset.scalarizer} scalarizer, but TRL and "
                        "verl add weighted rewards; choose a weighted_sum preset or pass "
                        "--weights", field="preset")
    if preset.constraints:
        raise MormError(f"preset {name!r} has constraints, which a reward function cannot "
                        "express; choose a preset without them or pass --weights",
                        field="preset")
    return preset


def function_names(objectives: list[str]) -> dict[str, str]:
    """A Python name per objective ('-' becomes '_'); '_reward' is added to a name that is a
    keyword or taken by the module or by another objective. TRL logs rewards under it."""
    taken = set(vars(exported_module)) | {"REWARD_FUNCS", "REWARD_WEIGHTS"}
    names = {}
    for o in objectives:
        name = o.replace("-", "_")
        while keyword.iskeyword(name) or name in taken:
            name += "_reward"
        taken.add(name)
        names[o] = name
    return names


def _module_text(model_name: str, objectives: list[str], names: dict[str, str],
                 weights: np.ndarray, standardized: bool) -> str:
    text = TEMPLATE.read_text(encoding="utf-8")
    text = text[text.index('"""'):]  # without the comment above the docstring
    settings = (
        "# -- settings (written by the export) " + "-" * 55 + "\n"
        f"MODEL_NAME = {model_name!r}\n"
        f"OBJECTIVES: list[str] = {list(objectives)!r}\n"
        f"WEIGHTS: list[float] = {weights.tolist()!r}  # w_k in OBJECTIVES order\n"
        f"STANDARDIZED = {standardized!r}  # z_k = (r_k - mean_k) / std_k with the model's "
        "stored statistics\n"
        "# -- end of settings " + "-" * 72 + "\n")
    text, n = _SETTINGS.subn(lambda _: settings, text)
    if n != 1:
        raise RuntimeError(f"{TEMPLATE} has no settings block")
    unit = "z-score" if standardized else "raw score"
    for o in objectives:
        text += (f"\n\ndef {names[o]}(prompts: list, completions: list, **kwargs: Any) "
                 "-> list[float]:\n"
                 f"    \"\"\"The {o!r} reward ({unit}) of each completion.\"\"\"\n"
                 f"    return objective_rewards({o!r}, prompts, completions)\n")
    funcs = ", ".join(names[o] for o in objectives)
    return text + f"\n\nREWARD_FUNCS = [{funcs}]\nREWARD_WEIGHTS = list(WEIGHTS)\n"


def _copy_model(model: RewardModel, source: Path, folder: Path) -> None:
    """The model folder and its backbone under ``folder``, safetensors only (see the module
    docstring); the copied config.json names the backbone ``../backbone``, which the loader
    reads beside the model folder."""
    config = read_config(source)
    b = model.backbones[0]
    architectures = b.model.config.architectures
    b.model.save_pretrained(folder / "backbone")  # safetensors
    # save_pretrained names the AutoModel class; the loader tells decoders by the original
    # architectures ("...ForCausalLM"), so they are kept.
    cfg_file = folder / "backbone" / "config.json"
    saved = json.loads(cfg_file.read_text(encoding="utf-8"))
    saved["architectures"] = architectures or saved.get("architectures")
    atomic_write_text(cfg_file, json.dumps(saved, indent=2))
    b.tokenizer.save_pretrained(folder / "backbone")
    target = folder / "model"
    target.mkdir()
    shutil.copytree(source / "tokenizer", target / "tokenizer")
    shutil.copy2(source / "heads.safetensors", target / "heads.safetensors")
    # One fine-tuned backbone is ./backbone itself; with one per objective, backbone-i is
    # loaded over it for head i.
    trained = bool(config.get("backbone_trained")) and len(model.backbones) > 1
    if trained:
        for i in range(len(model.backbones)):
            shutil.copy2(source / f"backbone-{i}.safetensors", target)
    config["model"]["backbone"] = "../backbone"
    config["backbone_trained"] = trained
    atomic_write_text(target / "config.json", json.dumps(config, indent=2, default=float))


def _expected(model: RewardModel, prompts: list[str], responses: list[str],
              standardized: bool) -> np.ndarray:
    """The project's rewards (N, K): `scoring.score`, standardized as the Explore page does."""
    import pandas as pd

    from morm_explorer.objectives import standardize
    from morm_explorer.scoring import score

    frame = pd.DataFrame({"prompt": prompts, "response": responses})
    values = score(model, frame).to_numpy(np.float64)
    return standardize(values, model.stats) if standardized else values


def _self_check(model: RewardModel, folder: Path, standardized: bool) -> float:
    """Max |exported module's rewards - the project's| on `PROBES`, on the CPU; raises when
    they differ."""
    spec = importlib.util.spec_from_file_location(f"_morm_reward_{time.time_ns()}",
                                                  folder / MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.DEVICE = "cpu"
    prompts, responses = [p for p, _ in PROBES], [r for _, r in PROBES]
    got = np.asarray(module.score(prompts, responses), dtype=np.float64)
    diff = float(np.abs(got - _expected(model, prompts, responses, standardized)).max())
    if not diff <= 1e-4:
        raise MormError(f"the exported reward functions disagree with the reward model by "
                        f"{diff:.3g}; not exported")
    return diff


def export_reward_function(model_dir: str | Path, out_dir: str | Path,
                           weights: dict[str, float] | None = None,
                           standardize: bool | None = None, normalize_weights: bool = False,
                           preset: str | None = None) -> Path:
    """Write the reward functions of the saved model ``model_dir`` into ``out_dir``.

    ``weights`` (objectives left out weigh 0; equal weights 1/K when None, divided by
    sum_k |w_k| with ``normalize_weights``) make `compute_score` and `REWARD_WEIGHTS`;
    ``standardize`` z-scores each objective with the model's stored statistics (None: when
    it has them). ``preset`` is only recorded. Raises `MormError` for bad input, or when the
    exported module does not reproduce the model's rewards.
    """
    source = Path(model_dir)
    model = load_reward_model(source)
    if not isinstance(model, RewardModel) or not (source / "heads.safetensors").is_file():
        raise MormError("only reward models trained in this project (backbone and heads) are "
                        "exported as reward functions so far", file=str(source))
    out = Path(out_dir)
    _check_target(out, source)
    objectives = model.objectives
    w = (scalarization(objectives, weights, normalize_weights) if weights
         else np.full(len(objectives), 1.0 / len(objectives)))
    if standardize is None:
        standardize = bool(model.stats)
    elif standardize and not model.stats:
        raise MormError("this model stores no score statistics to standardize with",
                        field="standardize")
    names = function_names(objectives)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _copy_model(model, source, tmp)
        atomic_write_text(tmp / MODULE, _module_text(source.name, objectives, names, w,
                                                     standardize))
        diff = _self_check(model, tmp, standardize)
        used = dict(zip(objectives, w.tolist(), strict=True))
        info = {"format": FORMAT, "morm_version": __version__, "created_at": time.time(),
                "source": str(source.resolve()), "model": source.name,
                "objectives": objectives, "functions": names, "weights": used,
                "preset": preset, "standardized": standardize, "stats": model.stats,
                "self_check_max_abs_diff": diff}
        atomic_write_text(tmp / "morm_export.json", json.dumps(info, indent=2, default=float))
        atomic_write_text(tmp / "README.md", _readme(source.name, objectives, names, used,
                                                     standardize))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _readme(name: str, objectives: list[str], names: dict[str, str],
            weights: dict[str, float], standardized: bool) -> str:
    funcs = ", ".join(names[o] for o in objectives)
    w = ", ".join(f"{v:g}" for v in weights.values())
    unit = ("z-scores: each objective standardized with the model's stored mean and standard "
            "deviation, as `morm score --standardize` and the Explore page do"
            if standardized else "raw scores, as `morm score` prints them")
    return f"""# Reward functions of `{name}`

`morm_reward.py` gives the reward model `{name}` (objectives: {', '.join(objectives)}) to
other trainers. They equal the project's scores for the same texts. Rewards are
{unit}.

It imports `morm_explorer` (install the MORM Explorer project with its requirements) and loads
`model/` and `backbone/` from this folder on first use, on CUDA when available
(`MORM_REWARD_DEVICE=cpu` to override; `MORM_REWARD_BATCH_SIZE`, default 64).

## TRL

One function per objective, `f(prompts, completions, **kwargs) -> list[float]`; prompts and
completions may be text or conversations. GRPOTrainer sums them with `reward_weights` and logs
each as `rewards/<function>/mean`.

```python
import sys
sys.path.insert(0, "path/to/this/folder")
from morm_reward import {funcs}
from trl import GRPOConfig, GRPOTrainer

trainer = GRPOTrainer(
    model="Qwen/Qwen2.5-0.5B-Instruct",
    reward_funcs=[{funcs}],
    args=GRPOConfig(output_dir="grpo", reward_weights=[{w}]),
    train_dataset=dataset,  # a "prompt" column, text or conversations
)
trainer.train()
```

`REWARD_FUNCS` and `REWARD_WEIGHTS` in `morm_reward.py` hold the same lists.

## verl

`compute_score(data_source, solution_str, ground_truth, extra_info=None)` returns the weighted
reward sum_k w_k r_k with the weights above. verl passes no prompt: store it in each row's
`extra_info["prompt"]` (text or messages; `extra_info["question"]` is read too).

```bash
python -m verl.trainer.main_ppo ... \\
    custom_reward_function.path=path/to/this/folder/morm_reward.py \\
    custom_reward_function.name=compute_score
# or, one batch per call (much faster for a model):
#   reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch
```

verl's reward managers also take a dict with the reward under `"score"` and log its other
keys; `score(prompts, responses)` gives each objective's reward for such a wrapper.

`morm_export.json` records the objectives, the function names, the weights, whether rewards
are standardized (with the statistics) and the source model.
"""
