"""On-disk cache of pooled backbone embeddings, for frozen-backbone training and scoring.

Keyed by (backbone, pooling, max_length) for the folder and by a hash of (prompt, response) for
each row, so retraining heads with new loss weights, or scoring new heads on known texts, costs
no backbone pass. Shards are safetensors files written atomically; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from morm_explorer.workspace import atomic_write_text

DIGEST = 16  # bytes of sha256 kept per key


def text_key(prompt: str, response: str) -> bytes:
    h = hashlib.sha256()
    h.update(prompt.encode("utf-8", "surrogatepass"))
    h.update(b"\x00\x1f\x00")
    h.update(response.encode("utf-8", "surrogatepass"))
    return h.digest()[:DIGEST]


class EmbeddingCache:
    """Embeddings of one backbone configuration, in ``root/<config hash>/shard-*.safetensors``."""

    def __init__(self, root: str | Path | None, backbone: str, pooling: str,
                 max_length: int) -> None:
        """``root=None`` keeps the cache in memory only (one training run's worth)."""
        ident = {"backbone": backbone, "pooling": pooling, "max_length": max_length}
        tag = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self.folder = Path(root) / tag if root is not None else None
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "ident.json", json.dumps(ident))
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            self._load_shard(path)

    @classmethod
    def for_backbone(cls, root: str | Path | None, backbone) -> EmbeddingCache:
        return cls(root, backbone.name, backbone.pooling, backbone.max_length)

    def _load_shard(self, path: Path) -> None:
        try:
            data = load_file(path)
        except Exception:  # a corrupt shard only costs a recomputation
            return
        s = len(self._shards)
        self._shards.append(data["emb"])
        for i, key in enumerate(data["keys"]):
            self._index[key.tobytes()] = (s, i)

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: list[bytes]) -> tuple[np.ndarray | None, list[int]]:
        """Embeddings of the cached keys (None rows elsewhere) and the indices still missing."""
        missing = [i for i, k in enumerate(keys) if k not in self._index]
        if not self._shards:
            return None, missing
        out = np.zeros((len(keys), self._shards[0].shape[1]), dtype=np.float32)
        for i, k in enumerate(keys):
            loc = self._index.get(k)
            if loc is not None:
                out[i] = self._shards[loc[0]][loc[1]]
        return out, missing

    def put(self, keys: list[bytes], emb: np.ndarray) -> None:
        if not keys:
            return
        new = [(k, e) for k, e in zip(keys, emb, strict=True) if k not in self._index]
        if not new:
            return
        karr = np.frombuffer(b"".join(k for k, _ in new), dtype=np.uint8).reshape(-1, DIGEST)
        earr = np.stack([e for _, e in new]).astype(np.float32)
        if self.folder is None:
            s = len(self._shards)
            self._shards.append(earr)
            self._index.update({k: (s, i) for i, (k, _) in enumerate(new)})
            return
        path = self.folder / f"shard-{len(self._shards):05d}-{karr[0, :4].tobytes().hex()}"\
            ".safetensors"
        tmp = path.with_suffix(".building")
        save_file({"keys": karr, "emb": earr}, str(tmp))
        os.replace(tmp, path)  # atomic: a reader sees the whole shard or none
        self._load_shard(path)


@torch.inference_mode()
def embed_with_cache(
    backbone,
    prompts: list[str],
    responses: list[str],
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    progress=None,
) -> np.ndarray:
    """Pooled embeddings (N, H) of (prompt, response) pairs, computing only what is missing.

    Missing rows are embedded in batches of similar length; ``progress(done, total)`` is called
    after each batch.
    """
    keys = [text_key(p, r) for p, r in zip(prompts, responses, strict=True)]
    out, missing = cache.get(keys) if cache is not None else (None, list(range(len(keys))))
    if out is None:
        out = np.zeros((len(keys), backbone.hidden_size), dtype=np.float32)
    backbone.eval()
    # length bucketing: the missing pairs sorted by token count, so a batch pads little
    order: list[int] = []
    if missing:
        lengths = backbone.lengths([prompts[i] for i in missing],
                                   [responses[i] for i in missing])
        order = [missing[j] for j in np.argsort(lengths, kind="stable")]
    autocast = backbone.device.type == "cuda"
    # the same precision as RewardModel.score: bf16, or fp16 on cards without bf16
    dtype = torch.bfloat16 if not autocast or torch.cuda.is_bf16_supported() else torch.float16
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        with torch.autocast("cuda", dtype=dtype, enabled=autocast):
            h = backbone.embed([prompts[i] for i in idx], [responses[i] for i in idx])
        out[idx] = h.float().cpu().numpy()
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    if cache is not None and missing:
        cache.put([keys[i] for i in missing], out[missing])
    return out


def score_cached(model, prompts: list[str], responses: list[str],
                 cache: EmbeddingCache | None) -> np.ndarray:
    """Rewards (N, K). A model whose backbone was never trained reads its pooled embeddings
    from ``cache`` (computing only new texts), so scoring costs the heads alone; any other
    model runs in full."""
    if cache is None or not getattr(model, "frozen_backbone", False) or len(model.backbones) > 1:
        return model.score(prompts, responses)
    emb = embed_with_cache(model.backbones[0], prompts, responses, cache)  # (N, H)
    with torch.inference_mode():
        h = torch.tensor(emb, device=model.device)
        r = model.rewards_from_embeddings([h] * len(model.heads))
    return r.float().cpu().numpy()


def score_with_embeddings(model, prompts: list[str], responses: list[str],
                          cache: EmbeddingCache | None, batch_size: int = 64, progress=None
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Rewards (N, K) and the pooled vectors (N, H) the heads read them from, in one backbone
    pass (none for texts ``cache`` holds, when the backbone was never trained). A model with a
    backbone per objective reads K vectors, and an external model or a composite
    (`reward.manifest`) none of this project's: they give None for the embeddings."""
    if len(getattr(model, "backbones", ())) != 1:
        return model.score(prompts, responses, batch_size=batch_size, progress=progress), None
    cache = cache if getattr(model, "frozen_backbone", False) else None
    emb = embed_with_cache(model.backbones[0], prompts, responses, cache,
                           batch_size=batch_size, progress=progress)  # (N, H)
    with torch.inference_mode():
        r = model.rewards_from_embeddings([torch.tensor(emb, device=model.device)])
    return r.float().cpu().numpy(), emb
