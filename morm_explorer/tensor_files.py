"""Safetensors files from disk, checked before they are read, and tensors checked against the
model they are meant for.

safetensors' own reader refuses a damaged file, but with a message that names neither the file
nor the tensor, and transformers lets a tensor of the wrong shape surface as a traceback.
`check_safetensors` reads only the header (an 8-byte little-endian length, then that many
bytes of JSON) and checks it against the file: the length fits in the file, the JSON parses,
and every tensor's ``data_offsets`` lie inside the data and span exactly the bytes its dtype
and shape need. `read_tensors` reads a file that passed. `check_shapes` compares tensors'
shapes with a module's; `check_model_folder` checks a Hugging Face folder's files, headers
only, against the shapes `model_shapes` builds from its config.json. Nothing here unpickles
anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open

from morm_explorer.errors import MormError

MAX_HEADER = 100_000_000  # bytes; safetensors refuses longer headers too
# bits per element of every dtype the safetensors format defines
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
              "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def _bad(path: Path, why: str) -> MormError:
    return MormError(f"cannot read safetensors file: {why}", file=str(path))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_tensor(path: Path, name: str, info: Any, n_data: int) -> None:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise _bad(path, f"tensor {name!r} lacks dtype, shape or data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise _bad(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad(path, f"tensor {name!r}: shape must be a list of sizes >= 0, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _bad(path, f"tensor {name!r}: data_offsets must be two integers, got {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= n_data:
        raise _bad(path, f"tensor {name!r}: data_offsets [{begin:,}, {end:,}] lie outside the "
                         f"file's {n_data:,} bytes of data")
    need = math.prod(shape) * DTYPE_BITS[dtype]  # bits
    if need != 8 * (end - begin):
        raise _bad(path, f"tensor {name!r}: dtype {dtype} and shape {shape} need "
                         f"{-(-need // 8):,} bytes, but its data_offsets span "
                         f"{end - begin:,}")


def check_safetensors(path: str | Path) -> dict[str, dict]:
    """The header of the safetensors file ``path`` (tensor name -> dtype, shape, data_offsets;
    plus ``__metadata__`` if any), after checking it against the file; `MormError` naming the
    file and the defect otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _bad(path, f"the file has {size} bytes, fewer than the 8 of its header "
                                 "length")
            n = int.from_bytes(prefix, "little")
            if n > size - 8:
                raise _bad(path, f"its header length, {n:,} bytes, runs past the end of the "
                                 f"file ({size:,} bytes)")
            if n > MAX_HEADER:
                raise _bad(path, f"its header length, {n:,} bytes, is over the limit of "
                                 f"{MAX_HEADER:,}")
            raw = fh.read(n)
    except OSError as e:
        raise _bad(path, e.strerror or str(e)) from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"its header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    for name, info in header.items():
        if name != "__metadata__":
            _check_tensor(path, name, info, size - 8 - n)
    return header


def read_tensors(path: str | Path, framework: str = "pt") -> dict[str, Any]:
    """Every tensor of the safetensors file ``path``, as torch tensors (``framework="pt"``) or
    numpy arrays (``"np"``), once `check_safetensors` passed."""
    check_safetensors(path)
    try:
        with safe_open(str(path), framework=framework) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for what is left
        raise _bad(Path(path), str(e)) from e


def check_shapes(found: Mapping[str, Any], expected: Mapping[str, Any], path: str | Path,
                 why: str = "the model") -> None:
    """Refuse the first tensor of ``found`` whose shape differs from that of ``expected``'s
    tensor of the same name (names ``expected`` lacks are left to the caller). Values are
    tensors, arrays or shapes (``torch.Size``, a header's list)."""
    for name, value in found.items():
        if name not in expected:
            continue
        shape, want = (tuple(getattr(v, "shape", v)) for v in (value, expected[name]))
        if shape != want:
            raise MormError(f"tensor {name!r} has shape {shape}; {why} needs {want}",
                            file=str(path))


def check_model_folder(folder: str | Path, expected: Mapping[str, Any] | None = None,
                       why: str = "the model") -> None:
    """`check_safetensors` on every ``*.safetensors`` file of the model folder ``folder``,
    reading headers only, and `check_shapes` against ``expected`` when given."""
    for f in sorted(Path(folder).glob("*.safetensors")):
        header = check_safetensors(f)
        if expected is not None:
            check_shapes({k: v["shape"] for k, v in header.items() if k != "__metadata__"},
                         expected, f, why)


def model_shapes(folder: str | Path, auto_class: Any, **kwargs: Any) -> dict[str, tuple] | None:
    """The tensor shapes of the model that ``folder``'s config.json describes, built on the meta
    device (no memory, no weights; ~0.1 s for a 135M model); None when transformers cannot build
    it (from_pretrained then says why). ``kwargs`` go to the config and the model."""
    import torch
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
        with torch.device("meta"):
            model = auto_class.from_config(config, **kwargs)
    except (OSError, ValueError, KeyError):
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
