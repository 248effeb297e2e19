"""The full demo, made once and shipped: `write_bundle` packs it, `install_bundle` unpacks it.

Building the demo's fine-tuned policies takes the better part of a quarter of an hour on a
2-core CPU, and sampling SmolLM2 for its candidate sets and comparison ten minutes more. So the
project ships the result: ``morm_explorer/data/demo_bundle.tar.xz``, made by

    morm demo --write-bundle morm_explorer/data/demo_bundle.tar.xz

which builds the whole demo from scratch in a temporary workspace (`PrepareDemoJob` with its
defaults, the built-in preference data, the CPU) and packs:

- the reward model ``demo-rm`` and the judge ``demo-judge`` (config, heads, tokenizer; not the
  training embeddings kept for the out-of-distribution check, which are megabytes and optional);
- the candidate sets ``smollm2-demo`` and ``compare-demo`` with their scores under both models;
- the scores of Explore's demo set ``demo-candidates`` under ``demo-rm`` (the set itself is made
  from the built-in data on every first start, and is the same each time);
- the fine-tuned policies ``demo-helpful`` and ``demo-harmless``: LoRA adapter folders (q_proj
  and v_proj at r16, float16: about 1.8 MB each; loaded over the base policy their
  ``morm_ppo.json`` names), and their runs' curves and samples (Fine-tune shows them);
- the comparison ``demo`` (the base policy and both runs on the held-out prompts, every sample
  with its scores under both models);
- ``bundle.json``: the job spec it was built with, the versions, each file's SHA-256, the build
  time of each part.

The policies' adapters make up most of the bundle's few MiB (an adapter on every linear layer
in float32 would be 19 MB each, which is why the demo's runs adapt two layers and save float16).
`write_bundle(..., with_policies=False)` leaves them out; the build then trains them on the spot
(12 GRPO steps each; about ten minutes for both on a 2-core CPU).

The demo build (`morm_explorer.demo_jobs`) installs the parts that are missing from the
workspace when the bundle's spec is the build's own (a changed default means a stale bundle: the
build then makes everything itself, and `tests/test_demo_bundle.py` fails until the bundle is
written again). Each part is checked against its SHA-256 and moved into place by one rename, so a
workspace never holds half a part. ``morm demo --full --no-bundle`` builds everything instead,
from real HH-RLHF when the hub answers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import Any

from morm_explorer.errors import MormError
from morm_explorer.workspace import Workspace, atomic_write_bytes, replace_dir

FORMAT = "morm-demo-bundle"
VERSION = 1
BUNDLE_FILE = "demo_bundle.tar.xz"
MANIFEST = "bundle.json"
MAX_BUNDLE_BYTES = 64 * 2**20  # no bundle this version writes is near this; a bigger one is a
# mistake (the shipped one is checked against a far smaller bound in tests)
SKIP = ("reference.safetensors",)  # optional, large: the OOD check's training embeddings
# The spec fields that do not change what the demo holds (where it runs, where data comes
# from when the hub is not asked: the bundle is always made from the built-in data).
NEUTRAL_FIELDS = ("device", "real_pairs", "use_bundle")


def bundle_path() -> Path:
    """Where the shipped bundle lives (inside the package)."""
    return Path(str(resources.files("morm_explorer.data").joinpath(BUNDLE_FILE)))


def spec_key(spec: Any) -> dict:
    """The fields of a `PrepareDemoJob` that decide the demo's content."""
    return {f.name: getattr(spec, f.name) for f in fields(spec)
            if f.name not in NEUTRAL_FIELDS}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def demo_parts_to_pack(ws: Workspace, with_policies: bool = True) -> dict[str, list[str]]:
    """Part name -> the workspace-relative files that make it, for a workspace holding the full
    demo. Folder parts list every file but `SKIP`; the policies' folders only ``with_policies``
    (their runs' curves and samples always)."""
    from morm_explorer.data.candidates import candidate_set_info, load_candidate_set
    from morm_explorer.data.demo_candidates import DEMO_CANDIDATE_SET
    from morm_explorer.demo_jobs import COMPARISON, JUDGE, POLICIES, RM, SAMPLED
    from morm_explorer.evaluation.compare import COMPARISONS, candidate_set_name
    from morm_explorer.policy.ppo_jobs import METRICS, SAMPLES, run_dir
    from morm_explorer.scoring import _cache_file as cache_path

    def folder(rel: str) -> list[str]:
        root = ws.root / rel
        if not root.is_dir():
            raise MormError(f"the workspace has no {rel}: build the full demo first",
                            file=str(root))
        return sorted(str(p.relative_to(ws.root)) for p in root.rglob("*")
                      if p.is_file() and p.name not in SKIP and not p.name.startswith("."))

    parts: dict[str, list[str]] = {}
    for model in (JUDGE, RM):
        parts[f"reward_models/{model}"] = folder(f"reward_models/{model}")
    for cset in (SAMPLED, candidate_set_name(COMPARISON)):
        candidate_set_info(ws, cset)  # raises when missing
        files = folder(f"candidates/{cset}")
        loaded = load_candidate_set(ws, cset)
        for model in (RM, JUDGE):
            path = cache_path(ws, ws.root / "reward_models" / model, loaded)
            if path.is_file():
                files.append(str(path.relative_to(ws.root)))
        parts[f"candidates/{cset}"] = files
    # Explore's demo set is made from the built-in data on every first start, but its scores
    # under the demo reward model ship: Explore answers as soon as the bundle is in.
    demo = load_candidate_set(ws, DEMO_CANDIDATE_SET)
    scores = cache_path(ws, ws.root / "reward_models" / RM, demo)
    if not scores.is_file():
        raise MormError(f"the workspace has no scores of {DEMO_CANDIDATE_SET} under {RM}: "
                        "build the full demo first", file=str(scores))
    parts[f"scores/{DEMO_CANDIDATE_SET}"] = [str(scores.relative_to(ws.root))]
    for name in POLICIES:
        if with_policies:
            parts[f"policies/{name}"] = folder(f"policies/{name}")
        run = run_dir(ws, name)
        parts[f"runs/ppo/{name}"] = [str((run / f).relative_to(ws.root))
                                     for f in (METRICS, SAMPLES) if (run / f).is_file()]
    parts[f"{COMPARISONS}/{COMPARISON}"] = folder(f"{COMPARISONS}/{COMPARISON}")
    return parts


def write_bundle(ws: Workspace, out: str | Path, spec: Any, timings: dict[str, float],
                 command: str = "", with_policies: bool = True) -> dict:
    """Pack the full demo of ``ws`` (built with ``spec``) into ``out`` (written atomically);
    returns the manifest."""
    import platform

    import torch
    import transformers

    from morm_explorer import __version__

    parts = demo_parts_to_pack(ws, with_policies=with_policies)
    manifest = {"format": FORMAT, "version": VERSION, "morm_version": __version__,
                "created_at": time.time(), "command": command, "spec": asdict(spec),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "machine": platform.platform(), "timings_s": timings,
                "parts": {}, "files": {}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for part, files in parts.items():
            manifest["parts"][part] = files
            for rel in files:
                data = (ws.root / rel).read_bytes()
                manifest["files"][rel] = _sha256(data)
                _add(tar, rel, data)
        _add(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    data = buf.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise MormError(f"the bundle is {len(data) / 2**20:.1f} MiB, over the "
                        f"{MAX_BUNDLE_BYTES // 2**20} MiB the repository carries", file=str(out))
    atomic_write_bytes(out, data)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


class Bundle:
    """An opened bundle: its manifest and its files, each checked against its SHA-256."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MormError("no demo bundle", file=str(self.path))
        if self.path.stat().st_size > MAX_BUNDLE_BYTES:
            raise MormError("the demo bundle is larger than any bundle this version writes",
                            file=str(self.path))
        self._files: dict[str, bytes] = {}
        try:
            with tarfile.open(self.path, mode="r:xz") as tar:
                total = 0
                for member in tar:
                    name = member.name
                    if (not member.isfile() or name.startswith(("/", "\\"))
                            or ".." in Path(name).parts):
                        raise MormError(f"unexpected entry {name!r}", file=str(self.path))
                    total += member.size
                    if total > 4 * MAX_BUNDLE_BYTES:
                        raise MormError("the demo bundle unpacks to too much data",
                                        file=str(self.path))
                    self._files[name] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise MormError(f"cannot read the demo bundle: {e}", file=str(self.path)) from e
        try:
            self.manifest = json.loads(self._files.pop(MANIFEST))
        except (KeyError, ValueError) as e:
            raise MormError(f"the demo bundle has no readable {MANIFEST}",
                            file=str(self.path)) from e
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise MormError(f"not a version-{VERSION} demo bundle", file=str(self.path),
                            field="format")

    @property
    def parts(self) -> dict[str, list[str]]:
        return self.manifest["parts"]

    def read(self, rel: str) -> bytes:
        try:
            data = self._files[rel]
        except KeyError:
            raise MormError(f"the demo bundle lacks {rel}", file=str(self.path)) from None
        if _sha256(data) != self.manifest["files"].get(rel):
            raise MormError(f"{rel} does not match its SHA-256 in {MANIFEST}: the bundle is "
                            "damaged", file=str(self.path))
        return data

    def matches(self, spec: Any) -> bool:
        """Whether the bundle was built with ``spec``'s content-deciding fields (a bundle made
        before a field existed does not say which value it was made with: no match)."""
        from morm_explorer.demo_jobs import PrepareDemoJob

        names = {f.name for f in fields(PrepareDemoJob)}
        recorded = self.manifest.get("spec", {})
        if not isinstance(recorded, dict) or not set(spec_key(spec)) <= set(recorded):
            return False
        try:
            built = PrepareDemoJob(**{k: v for k, v in recorded.items() if k in names})
        except (MormError, TypeError):
            return False
        return spec_key(built) == spec_key(spec)


def install_bundle(ws: Workspace, bundle: Bundle, present: Callable[[str], bool],
                   progress: Callable[[float, str], None] | None = None,
                   log: Callable[[str], None] = print) -> list[str]:
    """Put each part of ``bundle`` that ``present(part)`` says is missing into ``ws``; return
    the parts installed. Folder parts land by one rename; candidate sets go through
    `save_candidate_set` (they are listed in the workspace's database); single files (scores,
    curves) are written atomically."""
    from morm_explorer.data.candidates import CandidateSet, save_candidate_set

    installed = []
    # Scores first: they are keyed by the model's fingerprint, so they are found the moment
    # the model lands, and a page that sees the model never scores the set itself meanwhile.
    todo = sorted((p for p in bundle.parts if not present(p)),
                  key=lambda p: not p.startswith("scores/"))
    for i, part in enumerate(todo):
        if progress:
            progress(i / max(len(todo), 1), f"installing {part}")
        files = bundle.parts[part]
        group = part.split("/", 1)[0]
        if group == "candidates":
            import pandas as pd

            name = part.split("/", 1)[1]
            frame = pd.read_parquet(io.BytesIO(bundle.read(f"{part}/candidates.parquet")))
            origin = json.loads(bundle.read(f"{part}/info.json")).get("origin", "")
            save_candidate_set(ws, name, CandidateSet(frame, origin=origin), overwrite=True)
            for rel in files:
                if rel.startswith("cache/"):
                    atomic_write_bytes(ws.root / rel, bundle.read(rel))
        elif group in ("runs", "scores"):
            for rel in files:
                atomic_write_bytes(ws.root / rel, bundle.read(rel))
        else:
            _install_folder(ws, part, files, bundle)
        installed.append(part)
        log(f"installed {part} from the shipped demo")
    return installed


def _install_folder(ws: Workspace, part: str, files: Iterable[str], bundle: Bundle) -> None:
    target = ws.root / part
    if target.exists():
        raise MormError(f"{part} is already in the workspace", file=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for rel in files:
            dest = tmp / Path(rel).relative_to(part)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(bundle.read(rel))
            os.chmod(dest, 0o644)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
