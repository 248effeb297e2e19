"""What a job carries to a Ray node and brings back (`morm_explorer.jobs.transfer`), without
Ray: content digests, packing, which inputs a spec names, what a job changed, the atomic
commit into the workspace, and storage URIs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from morm_explorer.errors import MormError
from morm_explorer.jobs import transfer
from morm_explorer.jobs.builtin import SleepJob
from morm_explorer.jobs.store import JobStore
from morm_explorer.workspace import Workspace


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_digest_follows_names_and_contents_not_times(tmp_path):
    a = _tree(tmp_path / "a", {"x.json": "{}", "sub/w.bin": "123"})
    b = _tree(tmp_path / "b", {"x.json": "{}", "sub/w.bin": "123"})
    assert transfer.digest(a) == transfer.digest(b)
    (b / "sub" / "w.bin").write_text("124")
    assert transfer.digest(a) != transfer.digest(b)
    (a / ".x.json.tmp-1").write_text("half")  # temporary entries are not content
    assert transfer.digest(a) == transfer.digest(_tree(tmp_path / "c", {
        "x.json": "{}", "sub/w.bin": "123"}))


def test_pack_and_unpack_round_trip_through_the_node_cache(tmp_path):
    src = _tree(tmp_path / "model", {"config.json": '{"a": 1}', "w/weights.bin": "abc"})
    d = transfer.digest(src)
    transfer.pack(src, tmp_path / "m.tar")
    cache = transfer.NodeCache(tmp_path / "node")
    out = cache.add(d, tmp_path / "m.tar")
    assert out == cache.path(d) and (out / "w" / "weights.bin").read_text() == "abc"
    assert cache.add(d, tmp_path / "m.tar") == out  # already there
    transfer.place(out, tmp_path / "shadow" / "models" / "m", link=True)
    assert (tmp_path / "shadow" / "models" / "m" / "config.json").stat().st_ino == \
        (out / "config.json").stat().st_ino
    with pytest.raises(MormError, match="arrived damaged"):
        cache.add("0" * 64, tmp_path / "m.tar")
    with pytest.raises(MormError, match="not a content digest"):
        cache.path("../../etc")


def test_unpack_refuses_links_and_paths_outside(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        import io

        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises((MormError, tarfile.TarError)):
        transfer.unpack(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()
    linked = tmp_path / "link.tar"
    with tarfile.open(linked, "w") as tar:
        info = tarfile.TarInfo("l")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(MormError, match="not a file or a folder"):
        transfer.unpack(linked, tmp_path / "dest2")


def test_job_inputs_follow_names_references_and_absolute_paths(tmp_path):
    ws = Workspace(tmp_path / "ws")
    backbone = _tree(tmp_path / "bert", {"config.json": "{}", "w.bin": "1"})
    _tree(ws.root / "reward_models" / "rm", {"config.json": json.dumps(
        {"backbone": str(backbone), "source": "/"})})
    _tree(ws.root / "policies" / "base", {"config.json": "{}"})
    _tree(ws.root / "policies" / "adapter", {"morm_ppo.json": json.dumps(
        {"config": {"policy": "base"}})})
    prompts = _tree(tmp_path, {"p.jsonl": "{}\n"}) / "p.jsonl"
    spec = {"config": {"reward_model": "rm", "policy": "adapter", "name": "new-run"},
            "prompts": str(prompts)}
    new_spec, inputs, mapping = transfer.job_inputs(ws, spec)
    rels = [i.rel for i in inputs]
    assert "reward_models/rm" in rels and "policies/adapter" in rels
    assert "policies/base" in rels  # named by the adapter's manifest
    externals = {str(i.source): i.rel for i in inputs if i.rel.startswith("external/")}
    assert set(externals) == {str(backbone), str(prompts)}  # "/" is never sent
    assert new_spec["prompts"] == f"{transfer.SHADOW}/{externals[str(prompts)]}"
    assert mapping[str(backbone)].endswith("/bert")
    assert new_spec["config"]["name"] == "new-run"


def test_localize_json_rewrites_paths_without_touching_the_cached_original(tmp_path):
    cached = _tree(tmp_path / "cache", {"config.json": json.dumps({"b": "/app/bert"})})
    transfer.place(cached, tmp_path / "shadow" / "rm", link=True)
    transfer.localize_json(tmp_path / "shadow" / "rm", [("/app/bert", "/node/ext/bert")])
    assert json.loads((tmp_path / "shadow" / "rm" / "config.json").read_text()) == {
        "b": "/node/ext/bert"}
    assert json.loads((cached / "config.json").read_text()) == {"b": "/app/bert"}


def test_changed_units_name_what_a_job_wrote(tmp_path):
    root = _tree(tmp_path / "shadow", {"reward_models/rm/config.json": "{}",
                                       "runs/ppo/r/checkpoint/a": "1"})
    Workspace(root)
    before = transfer.snapshot(root)
    _tree(root, {"policies/new/config.json": "{}", "runs/ppo/r/metrics.jsonl": "{}",
                 "cache/scores/ab.safetensors": "x", "jobs/j/staging/x": "y",
                 "models/.lock": "", "policies/.new.tmp-1/x": ""})
    changed, gone = transfer.changed_units(root, before)
    assert changed == ["cache/scores/ab.safetensors", "policies/new", "runs/ppo/r"]
    assert gone == []
    import shutil

    shutil.rmtree(root / "runs" / "ppo" / "r")
    assert transfer.changed_units(root, before)[1] == ["runs/ppo/r"]


def _running(ws: Workspace) -> tuple[str, str]:
    store = JobStore(ws)
    job_id = store.submit(SleepJob())
    store.claim("w1", job_id=job_id)
    return job_id, "w1"


def _unit(tmp_path: Path, name: str, files: dict[str, str]) -> transfer.Unit:
    src = _tree(tmp_path / "src" / name.replace("/", "_"), files)
    tar = tmp_path / f"{name.replace('/', '_')}.tar"
    transfer.pack(src, tar)
    return transfer.Unit(name, tar)


def test_commit_units_puts_outputs_in_place_or_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    job_id, worker = _running(ws)
    _tree(ws.root / "policies" / "old", {"config.json": "old"})
    units = [_unit(tmp_path, "policies/new", {"config.json": "new"}),
             _unit(tmp_path, "policies/old", {"config.json": "newer"})]
    with pytest.raises(MormError, match="policies/old already exists"):
        transfer.commit_units(ws, units, {}, may_replace=set(), overwrite=False,
                              job_id=job_id, worker_id=worker)
    assert not (ws.root / "policies" / "new").exists()  # nothing half-committed
    assert (ws.root / "policies" / "old" / "config.json").read_text() == "old"
    rows = {"candidate_sets": [{"name": "new", "n_candidates": 1, "n_prompts": 1,
                                "sources": "[]", "origin": "", "fingerprint": "f",
                                "created_at": 1.0}]}
    done = transfer.commit_units(ws, units, rows, may_replace=set(), overwrite=True,
                                 job_id=job_id, worker_id=worker)
    assert done == ["policies/new", "policies/old"]
    assert (ws.root / "policies" / "old" / "config.json").read_text() == "newer"
    with ws.reading() as con:
        assert con.execute("SELECT COUNT(*) FROM candidate_sets").fetchone()[0] == 1
    assert not list((ws.root / "policies").glob(".*"))  # no temporary folder left


def test_a_cancelled_job_commits_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    job_id, worker = _running(ws)
    JobStore(ws).cancel(job_id)
    with pytest.raises(MormError, match="no longer running"):
        transfer.commit_units(ws, [_unit(tmp_path, "policies/p", {"a": "1"})], {},
                              may_replace=set(), overwrite=False, job_id=job_id,
                              worker_id=worker)
    assert not (ws.root / "policies" / "p").exists()


@pytest.mark.parametrize("unit", ["../x", "policies/../../etc", "jobs/j", "policies",
                                  "policies/.hidden", "morm.sqlite/x", "a/b/c/d"])
def test_a_unit_outside_what_outputs_may_be_is_refused(unit):
    with pytest.raises(MormError, match="cannot take"):
        transfer.check_unit(unit)


def test_storage_puts_and_gets_by_key_and_refuses_credentials(tmp_path):
    store = transfer.Storage((tmp_path / "s").as_uri())
    src = _tree(tmp_path, {"f.bin": "payload"}) / "f.bin"
    assert not store.exists("cas/abc.tar")
    store.put("cas/abc.tar", src)
    assert store.exists("cas/abc.tar")
    store.get("cas/abc.tar", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_text() == "payload"
    with pytest.raises(MormError, match="not in the storage"):
        store.get("cas/missing.tar", tmp_path / "x")
    with pytest.raises(MormError, match="not a storage key"):
        store.exists("../up")
    with pytest.raises(MormError, match="credentials"):
        transfer.Storage("s3://key:secret@bucket/prefix")
    with pytest.raises(MormError, match="storage URI"):
        transfer.Storage("just-a-folder")
