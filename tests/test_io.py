"""cediag.load: every file type, dict files and keys, guard dumps, and the bad-input list."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cediag
from cediag._io import IncompleteCall, LoadError, load, load_tensor, split_key


def logits(n: int = 8, c: int = 5) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(0))


def labels(n: int = 8, c: int = 5) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1))


def write_guard_dump(directory, stem, x, t, *, weight=None, sidecar_options=None, **options):
    """A dump in the guard's format: safetensors + metadata, and an optional JSON sidecar."""
    opts = {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0}
    opts |= {"loss": "cross_entropy"} | options
    tensors = {"input": x, "target": t} | ({"weight": weight} if weight is not None else {})
    path = directory / f"{stem}.safetensors"
    metadata = {"cediag_dump": "1", **{k: str(v) for k, v in opts.items()}}
    save_file(tensors, str(path), metadata=metadata)
    if sidecar_options is not None:
        report = cediag.check(x, t).model_dump(mode="json")
        sidecar = {"schema_version": 1, "options": opts | sidecar_options, "report": report}
        path.with_suffix(".json").write_text(json.dumps(sidecar | {"call_site": "train.py:42"}))
    return path


class Evil:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


# ---------------------------------------------------------------- each file type


def test_pt_dict(tmp_path):
    path = tmp_path / "batch.pt"
    torch.save({"input": logits(), "target": labels(), "ignore_index": 3}, path)
    saved = load(path)
    assert torch.equal(saved.input, logits()) and torch.equal(saved.target, labels())
    assert saved.options == {"ignore_index": 3}
    assert saved.check_kwargs()["ignore_index"] == 3
    assert saved.check_kwargs(ignore_index=7)["ignore_index"] == 7


def test_pth_tuple_with_weight(tmp_path):
    path = tmp_path / "call.pth"
    torch.save((logits(), labels(), torch.ones(5)), path)
    saved = load(path)
    assert saved.weight is not None and saved.weight.shape == (5,)
    assert cediag.check(**saved.check_kwargs()).ok


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npy"])
def test_files_are_memory_mapped_not_copied(tmp_path, suffix):
    path = tmp_path / f"batch{suffix}"
    if suffix == ".pt":
        torch.save({"input": logits(), "target": labels()}, path)
        saved = load(path)
    elif suffix == ".safetensors":
        save_file({"input": logits(), "target": labels()}, str(path))
        saved = load(path)
    else:
        np.save(path, logits().numpy())
        saved = load_tensor(path)
    with open("/proc/self/maps") as maps:
        assert str(path) in maps.read()  # the data stays file-backed: bounded anonymous memory
    assert saved is not None


def test_safetensors_keys_and_bf16(tmp_path):
    path = tmp_path / "data.safetensors"
    x = logits().bfloat16()
    save_file({"logits": x, "labels": labels(), "other": torch.zeros(3)}, str(path))
    saved = load(path)  # "logits"/"labels" are recognised names
    assert saved.input.dtype is torch.bfloat16 and torch.equal(saved.input, x)
    assert torch.equal(load_tensor(f"{path}:other"), torch.zeros(3))
    assert torch.equal(load(f"{path}:logits", f"{path}:labels").target, labels())


def test_safetensors_zero_size_tensor(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({"input": torch.zeros(0, 5), "target": torch.zeros(0, dtype=torch.long)}, str(path))
    saved = load(path)
    assert saved.input.shape == (0, 5)
    assert cediag.check(**saved.check_kwargs()).by_rule("empty-batch") is not None


def test_npy_pair_and_npz(tmp_path):
    np.save(tmp_path / "x.npy", logits().numpy())
    np.save(tmp_path / "t.npy", labels().numpy())
    saved = load(tmp_path / "x.npy", tmp_path / "t.npy")
    assert torch.equal(saved.input, logits()) and saved.target.dtype is torch.int64
    np.savez(tmp_path / "b.npz", input=logits().numpy(), target=labels().numpy())
    assert torch.equal(load(tmp_path / "b.npz").target, labels())


def test_big_endian_npy_is_converted(tmp_path):
    np.save(tmp_path / "x.npy", logits().numpy().astype(">f4"))
    assert torch.equal(load_tensor(tmp_path / "x.npy"), logits())


def test_custom_keys(tmp_path):
    path = tmp_path / "batch.pt"
    torch.save({"scores": logits(), "gold": labels(), "w": torch.ones(5)}, path)
    with pytest.raises(LoadError, match="'scores', 'gold', 'w'"):
        load(path)
    saved = load(path, input_key="scores", target_key="gold", weight_key="w")
    assert saved.weight is not None
    with pytest.raises(LoadError, match="no tensor 'nope'.*pick one of those keys"):
        load(path, input_key="scores", target_key="nope")


def test_split_key():
    assert split_key("a.safetensors:logits") == (split_key("a.safetensors")[0], "logits")
    assert split_key("plain.pt")[1] is None
    assert split_key("weird:name")[1] is None  # no known suffix before the colon


# ---------------------------------------------------------------- guard dumps


def test_guard_dump_options_from_metadata(tmp_path):
    t = labels()
    t[0] = 255
    path = write_guard_dump(tmp_path, "dump", logits(), t, ignore_index=255, loss="cross_entropy")
    saved = load(path)
    assert saved.options == {
        "ignore_index": 255,
        "reduction": "mean",
        "label_smoothing": 0.0,
        "loss": "cross_entropy",
    }
    assert cediag.check(**saved.check_kwargs()).ok  # 255 is ignored, as in the training run


def test_guard_dump_sidecar_wins(tmp_path):
    path = write_guard_dump(
        tmp_path, "dump", logits(), labels(), reduction="mean", sidecar_options={"reduction": "sum"}
    )
    assert load(path).options["reduction"] == "sum"


def test_broken_sidecar_is_a_note_not_a_failure(tmp_path):
    path = write_guard_dump(tmp_path, "dump", logits(), labels(), ignore_index=4)
    path.with_suffix(".json").write_text("{not json")
    saved = load(path)
    assert saved.options["ignore_index"] == 4
    assert any("sidecar" in note for note in saved.notes)


def test_plain_safetensors_metadata_is_not_read_as_options(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"input": logits(), "target": labels()}, str(path), metadata={"reduction": "sum"})
    assert load(path).options == {}


# ---------------------------------------------------------------- bad input: one line each


def test_missing_file(tmp_path):
    with pytest.raises(LoadError, match=r"nope\.pt: no such file; check the path"):
        load(tmp_path / "nope.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npy", ".npz"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(LoadError, match="is empty"):
        load(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npy", ".npz"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    x, t = logits(64, 16), labels(64, 16)
    if suffix == ".pt":
        torch.save({"input": x, "target": t}, path)
    elif suffix == ".safetensors":
        save_file({"input": x, "target": t}, str(path))
    elif suffix == ".npy":
        np.save(path, x.numpy())
    else:
        np.savez(path, input=x.numpy(), target=t.numpy())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LoadError, match="truncated|corrupt") as info:
        load(path) if suffix != ".npy" else load_tensor(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"input": logits(), "target": labels(), "x": Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(LoadError, match="refused to unpickle.*could run code.*--unsafe-load"):
        load(path)
    assert not marker.exists()


def test_unsafe_load_does_unpickle(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"input": logits(), "target": labels(), "x": Evil(marker)}, path)
    load(path, unsafe=True)
    assert marker.exists()  # what --unsafe-load warns about


def test_object_npy_is_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LoadError, match="object array"):
        load_tensor(path)


def test_non_tensor_pickle(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save({"a": "hello", "b": [1, 2]}, path)
    with pytest.raises(LoadError, match="no tensors"):
        load(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps([1, 2, 3]))  # a bare pickle, not torch.save's format
    with pytest.raises(LoadError, match=r"raw\.pt"):
        load(raw)


def test_single_tensor_is_incomplete(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(logits(), path)
    with pytest.raises(IncompleteCall, match="give the target file"):
        load(path)


def test_wrong_key(tmp_path):
    path = tmp_path / "data.safetensors"
    save_file({"logits": logits(), "labels": labels()}, str(path))
    with pytest.raises(LoadError, match="has no tensor 'logit' \\(it holds .*'logits'"):
        load_tensor(f"{path}:logit")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(LoadError, match="unknown file type .csv"):
        load(path)


def test_safetensors_with_unknown_dtype(tmp_path):
    header = json.dumps({"input": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(LoadError, match="unsupported dtype"):
        load(path)
