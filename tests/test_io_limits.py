"""Files from strangers: what a crafted or damaged file can make `cediag.load` allocate or say.

The memory tests load the file in a child process and compare its peak resident memory before
and after the load; each crafted file would make an unguarded reader allocate a gigabyte or more.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from cediag._io import LoadError, SavedCall, load, load_tensor
from cediag._io_base import COPY_ENV

LINUX = sys.platform.startswith("linux")
GiB = 2**30


def call_tensors():
    return {"input": torch.randn(4, 3), "target": torch.tensor([0, 1, 2, 0])}


# ---------------------------------------------------------------- crafted files


class Calls:
    """Pickles as a call of `func(*args)`: how a crafted file makes torch call an allowed global."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    state = None

    def with_state(self, state):
        self.state = state
        return self

    def __reduce__(self):
        return (self.func, self.args, self.state)


def write_pt_calling(path, func, *args):
    torch.save({**call_tensors(), "x": Calls(func, *args)}, path)


def write_safetensors(path, header: str, data: bytes = b""):
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def write_npz_bomb(path, nbytes):
    """A zip holding one deflated .npy of `nbytes` zeros; the file itself is ~0.1% of that."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)}
    )
    header = header.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    zeros = deflate.compress(bytes(2**20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    data = head + zeros * (nbytes // 2**20) + deflate.flush(zlib.Z_FINISH)
    name, size, crc = b"input.npy", len(header) + nbytes, 0  # the CRC is checked only at the end
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        *(b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0),
    )
    directory_at = len(local) + len(name) + len(data)
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), directory_at, 0
    )
    path.write_bytes(local + name + data + central + name + end)


def write_sparse_npy(path, shape, descr):
    """An .npy whose data is a hole in a sparse file: big on paper, nothing on disk."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(descr).itemsize)


class _Storage:
    pass


class _Tensor:
    def __init__(self, storage, numel):
        self.storage, self.numel = storage, numel

    def __reduce__(self):
        args = (self.storage, 0, (self.numel,), (1,), False, OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def write_legacy_pt(path, values=None, *, numel=None):
    """A legacy (pre-1.6, non-zip) torch.save file of {'input': float32 tensor}: five pickles,
    then the storage as 8 bytes of length and its data (`values`, or a hole of `numel` floats)."""
    numel = len(values) if values is not None else numel
    storage = _Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is storage:
                return ("storage", torch.FloatStorage, "0", "cpu", numel, None)
            return None

    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    with open(path, "wb") as f:
        for value in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            pickle.dump(value, f, protocol=2)
        Pickler(f, protocol=2).dump({"input": _Tensor(storage, numel)})
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", numel))
        if values is not None:
            f.write(np.asarray(values, dtype="<f4").tobytes())
        else:
            f.truncate(f.tell() + 4 * numel)


# ---------------------------------------------------------------- peak memory of a child

# One child imports cediag once, then forks a fresh process per file: each reads a small good
# file of the same kind first (imports, first-use costs), then the crafted one, and reports how
# much its peak resident memory grew while reading it, and the LoadError message.
_CHILD = """
import json, os, resource, sys, warnings
from cediag._io import LoadError, load, load_tensor
warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)  # Python 3.12+: torch's threads
results = {}
for name, warm, path in json.loads(sys.argv[1]):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        load_tensor(warm)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_tensor(path)
            error = None
        except LoadError as e:
            error = str(e)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(write_end, json.dumps([(after - before) / 1024, error]).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        results[name] = json.loads(pipe.read() or "[null, null]")
    os.waitpid(pid, 0)
print(json.dumps(results))
"""


def _dense_safetensors(path, n=300_000):
    """One-byte tensors by the hundred thousand: a 17 MB header."""
    entries = ",".join(
        f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}' for i in range(n)
    )
    write_safetensors(path, "{" + entries + "}", bytes(n))


@pytest.fixture(scope="module")
def peak_growth(tmp_path_factory):
    """{case: (MiB the peak resident memory grew while loading it, LoadError message)}."""
    if not LINUX:
        pytest.skip("ru_maxrss in KiB, fork and sparse files, as on Linux")
    d = tmp_path_factory.mktemp("crafted")
    one = {"input": torch.zeros(4, 3)}
    torch.save(one, d / "ok.pt")
    write_pt_calling(d / "bytearray.pt", bytearray, GiB)
    np.savez_compressed(d / "ok.npz", input=np.zeros((4, 3), "f4"))
    write_npz_bomb(d / "bomb.npz", 2 * GiB)
    np.save(d / "ok.npy", np.zeros(3, ">f4"))
    write_sparse_npy(d / "big-endian.npy", (GiB // 4,), ">f4")
    write_legacy_pt(d / "ok-legacy.pt", [1.0, 2.0])
    write_legacy_pt(d / "legacy.pt", numel=GiB // 4)
    with open(d / "long-string.pt", "wb") as f:  # a pickle string claiming 2 GiB, then a hole
        f.write(b"\x80\x02X" + struct.pack("<I", 2 * GiB - 1))
        f.truncate(2 * GiB + 64)
    save_file(one, str(d / "ok.safetensors"))
    _dense_safetensors(d / "dense.safetensors")
    cases = [
        ("bytearray", "ok.pt", "bytearray.pt"),
        ("npz bomb", "ok.npz", "bomb.npz"),
        ("big-endian npy", "ok.npy", "big-endian.npy"),
        ("legacy pt", "ok-legacy.pt", "legacy.pt"),
        ("long string", "ok-legacy.pt", "long-string.pt"),
        ("dense header", "ok.safetensors", "dense.safetensors"),
    ]
    assert (d / "bytearray.pt").stat().st_size < 4096
    assert (d / "bomb.npz").stat().st_size < 4 * 2**20
    argument = json.dumps([(name, str(d / warm), str(d / path)) for name, warm, path in cases])
    env = {k: v for k, v in os.environ.items() if k != COPY_ENV}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, argument],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,  # not a time limit on cediag: a guard against a child that never returns
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no warning leaks either
    return json.loads(out.stdout.strip().splitlines()[-1])


# Unguarded, each of these allocated the gigabytes the file asks for.
def test_pt_calling_bytearray_allocates_nothing(peak_growth):
    grew, error = peak_growth["bytearray"]  # torch.load(weights_only=True) allocated 1 GiB
    assert grew < 64
    assert "refused to unpickle: it uses builtins.bytearray" in error


def test_npz_bomb_is_refused_before_inflating(peak_growth):
    grew, error = peak_growth["npz bomb"]  # numpy inflated 2 GiB of zeros
    assert grew < 64
    assert "it is compressed" in error and COPY_ENV in error


def test_big_endian_npy_over_the_copy_limit_is_refused(peak_growth):
    grew, error = peak_growth["big-endian npy"]  # mapped, then copied whole to native order
    assert grew < 64
    assert "big-endian" in error and "newbyteorder" in error


def test_legacy_pt_over_the_copy_limit_is_refused(peak_growth):
    grew, error = peak_growth["legacy pt"]  # torch allocated the storage and read 1 GiB into it
    assert grew < 64
    assert "legacy" in error and "zip format" in error


def test_pickle_string_longer_than_the_limit_is_not_read(peak_growth):
    grew, error = peak_growth["long string"]  # torch reads the 2 GiB string, then fails
    assert grew < 64
    assert "its pickle is larger than 4 MiB" in error


def test_dense_safetensors_header_is_refused_before_parsing(peak_growth):
    grew, error = peak_growth["dense header"]  # every entry parsed and made a tensor view
    assert grew < 64
    assert "MiB header" in error and "save_file" in error


# ---------------------------------------------------------------- pickles: only what tensors need


@pytest.mark.parametrize(
    ("func", "arg", "shown"),
    [
        (bytearray, 10**12, "uses builtins.bytearray"),
        (torch.Tensor, 10**12, "calls torch.Tensor"),
        (torch.UntypedStorage, 10**12, "calls torch.storage.UntypedStorage"),
        (set, [1, 2], "uses builtins.set"),
    ],
)
def test_pickle_globals_a_tensor_file_never_calls_are_refused(tmp_path, func, arg, shown):
    path = tmp_path / "evil.pt"
    write_pt_calling(path, func, arg)
    with pytest.raises(LoadError, match=f"refused to unpickle: it {shown}") as info:
        load(path)
    assert "\n" not in str(info.value)


def test_tensor_subclass_rebuild_cannot_call_a_class(tmp_path):
    # _rebuild_from_type_v2(func, type, args, state) calls func(*args): func must rebuild a tensor
    path = tmp_path / "evil.pt"
    rebuild = torch._tensor._rebuild_from_type_v2
    write_pt_calling(path, rebuild, torch.Tensor, torch.Tensor, (10**12,), {})
    with pytest.raises(LoadError, match="rebuilds a tensor subclass through torch.Tensor"):
        load(path)


def test_allowed_calls_with_arguments_torch_save_never_writes_are_refused(tmp_path):
    # OrderedDict(t) iterates t row by row: a zero-stride tensor of a few bytes has any rows
    path = tmp_path / "evil.pt"
    rows = torch.zeros(1, 2).expand(100_000, 2)
    write_pt_calling(path, OrderedDict, rows)
    with pytest.raises(LoadError, match="calls collections.OrderedDict with arguments"):
        load(path)


def test_object_state_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**call_tensors(), "x": Calls(OrderedDict).with_state({"a": 1})}, path)
    with pytest.raises(LoadError, match="sets the state of an object"):
        load(path)


def test_oversized_pickle_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "big.pt"
    torch.save({**call_tensors(), "notes": "x" * (5 * 2**20)}, path)
    with pytest.raises(LoadError, match="its pickle is larger than 4 MiB"):
        load(path)


def test_what_torch_save_writes_for_tensors_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    tagged = torch.randn(4, 3)
    tagged.note = "kept"  # a tensor with attributes: pickled through _rebuild_from_type_v2
    data = {
        "input": tagged,
        "target": torch.tensor([0, 1, 2, 0]),
        "weight": torch.nn.Parameter(torch.ones(3)),
        "extra": [torch.zeros(2).bfloat16(), (torch.zeros(1, dtype=torch.uint16), 3.5, None)],
        "meta": torch.empty(2, device="meta"),
        "ordered": OrderedDict(a=torch.ones(1)),
        "ignore_index": 2,
        "reduction": "sum",
    }
    torch.save(data, path)
    saved = load(path)
    assert torch.equal(saved.input, tagged) and saved.weight.shape == (3,)
    assert saved.options == {"ignore_index": 2, "reduction": "sum"}


def test_legacy_pt_within_the_limit_loads(tmp_path):
    path = tmp_path / "old.pt"
    write_legacy_pt(path, [1.0, 2.0, 3.0])
    assert torch.equal(load_tensor(path), torch.tensor([1.0, 2.0, 3.0]))


def test_legacy_pt_declaring_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    write_legacy_pt(path, numel=2**20)  # declares 4 MiB of data...
    path.write_bytes(path.read_bytes()[:4096])  # ...and holds a few bytes of it
    with pytest.raises(LoadError, match="declares 4194312 bytes of tensor data but holds"):
        load_tensor(path)


def test_compressed_records_in_a_pt_zip_are_refused(tmp_path):
    import zipfile

    good, path = tmp_path / "ok.pt", tmp_path / "deflated.pt"
    torch.save(call_tensors(), good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(LoadError, match="compressed or encrypted record"):
        load(path)


# ---------------------------------------------------------------- safetensors validation


def f32x2(begin, end):
    return f'{{"dtype":"F32","shape":[2],"data_offsets":[{begin},{end}]}}'


MALFORMED = {
    "overlapping offsets": (
        '{"a":' + f32x2(0, 8) + ',"b":' + f32x2(4, 12) + "}",
        12,
        "tensor 'b' overlaps 'a'",
    ),
    "float shape": ('{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8, "shape"),
    "boolean shape": ('{"a":{"dtype":"F32","shape":[true,true],"data_offsets":[0,4]}}', 4, "shape"),
    "string shape": ('{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}', 8, "shape"),
    "negative shape": ('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8, "shape"),
    "duplicate keys": (
        '{"a":' + f32x2(0, 8) + ',"a":' + f32x2(8, 16) + "}",
        16,
        "'a' appears twice",
    ),
    "offsets not dtype x shape": (
        '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
        8,
        "shape and dtype need 12",
    ),
    "float offsets": ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}', 8, "offsets"),
    "gap before a tensor": ('{"a":' + f32x2(4, 12) + "}", 12, "gap"),
    "bytes after the last tensor": ('{"a":' + f32x2(0, 8) + "}", 12, "belong to no tensor"),
    "metadata not strings": (
        '{"__metadata__":{"k":1},"a":' + f32x2(0, 8) + "}",
        8,
        "__metadata__",
    ),
    "NaN in the header": ('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', 8, "bad"),
    "shape overflows": (
        '{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}',
        0,
        "too many elements",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_safetensors_are_refused_as_by_the_library(tmp_path, case):
    header, data_len, says = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    write_safetensors(path, header, bytes(data_len))
    with pytest.raises(safetensors.SafetensorError):
        safetensors.torch.load(path.read_bytes())
    with pytest.raises(LoadError, match="save it again") as info:
        load_tensor(path, key="a")
    assert says in str(info.value)


def test_well_formed_edge_cases_still_load(tmp_path):
    path = tmp_path / "ok.safetensors"
    empty = '{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}'
    header = '{"__metadata__":null,"e":' + empty + ',"a":' + f32x2(0, 8) + "}"
    write_safetensors(path, header, struct.pack("<2f", 1.5, 2.5))
    assert safetensors.torch.load(path.read_bytes())["a"].tolist() == [1.5, 2.5]
    assert load_tensor(path, key="a").tolist() == [1.5, 2.5]
    assert load_tensor(path, key="e").shape == (0, 3)


def test_too_many_safetensors_tensors(tmp_path):
    path = tmp_path / "many.safetensors"
    n = 10_001  # a header within the size limit, keys spelled with an escape
    entries = ",".join(
        f'"{i}":{{"dtype":"U8","shape":[],"data\\u005foffsets":[{i},{i + 1}]}}' for i in range(n)
    )
    write_safetensors(path, "{" + entries + "}", bytes(n))
    with pytest.raises(LoadError, match="holds more than 10000 tensors"):
        load(path)


def test_a_file_of_many_tensors_lists_a_few_names(tmp_path):
    path = tmp_path / "many.safetensors"
    save_file({f"t{i}": torch.zeros(1) for i in range(500)}, str(path))
    with pytest.raises(LoadError, match="'t0', .* and 488 more\\) and none is named 'input'"):
        load(path)


def test_safetensors_views_are_made_only_for_tensors_used(tmp_path):
    path = tmp_path / "many.safetensors"
    save_file({f"t{i}": torch.full((2,), float(i)) for i in range(50)}, str(path))
    saved = load(path, input_key="t7", target_key="t9")
    assert saved.input.tolist() == [7.0, 7.0] and saved.target.tolist() == [9.0, 9.0]


# ---------------------------------------------------------------- copies within the limit


def test_copy_limit_applies_to_big_endian_npy(tmp_path, monkeypatch):
    path = tmp_path / "be.npy"
    values = np.arange(2**19, dtype=">f4")  # 2 MiB
    np.save(path, values)
    assert np.array_equal(load_tensor(path).numpy(), values)
    monkeypatch.setenv(COPY_ENV, "1")
    with pytest.raises(LoadError, match=f"needs 2 MiB copied.*{COPY_ENV}=2"):
        load_tensor(path)


def test_copy_limit_applies_to_compressed_npz(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, input=np.zeros((2**18, 2), "f4"), target=np.zeros(2**18, "i8"))
    assert load(path).input.shape == (2**18, 2)
    monkeypatch.setenv(COPY_ENV, "3")  # each array fits, both together do not
    with pytest.raises(LoadError, match="array 'target' cannot be mapped: it is compressed"):
        load(path)


def test_stored_npz_members_are_mapped_not_copied(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    x = np.arange(12, dtype="f4").reshape(4, 3)
    np.savez(path, input=x, target=np.arange(4) % 3, f=np.asfortranarray(x))
    monkeypatch.setenv(COPY_ENV, "1")  # nothing is copied, so any limit is enough
    saved = load(path)
    assert np.array_equal(saved.input.numpy(), x) and saved.target.tolist() == [0, 1, 2, 0]
    assert np.array_equal(load_tensor(f"{path}:f").numpy(), x)


def test_copy_limit_applies_to_a_big_endian_pt(tmp_path, monkeypatch):
    import zipfile

    little, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save(
        {"input": torch.zeros(2**18, 4), "target": torch.zeros(2**18, dtype=torch.long)}, little
    )
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():  # as saved on a big-endian machine: torch swaps every byte
            big_endian = info.filename.endswith("/byteorder")
            dst.writestr(info.filename, b"big" if big_endian else src.read(info))
    assert load(big).input.shape == (2**18, 4)
    monkeypatch.setenv(COPY_ENV, "2")
    with pytest.raises(LoadError, match="saved big-endian, and torch byte-swaps it in memory"):
        load(big)


@pytest.mark.parametrize(("suffix", "says"), [(".npz", "arrays"), (".pt", "records")])
def test_zip_declaring_too_many_records_is_refused_before_listing_them(tmp_path, suffix, says):
    path = tmp_path / f"many{suffix}"
    if suffix == ".npz":
        np.savez(path, input=np.zeros((4, 3), "f4"), target=np.zeros(4, "i8"))
    else:
        torch.save(call_tensors(), path)
    raw = bytearray(path.read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    raw[end + 8 : end + 12] = struct.pack("<HH", 60_000, 60_000)  # what the end record declares
    path.write_bytes(bytes(raw))
    with pytest.raises(LoadError, match=f"holds more than 10000 {says}"):
        load(path)


def test_bad_copy_limit_setting_is_a_load_error(tmp_path, monkeypatch):
    path = tmp_path / "be.npy"
    np.save(path, np.zeros(3, ">f4"))
    monkeypatch.setenv(COPY_ENV, "lots")
    with pytest.raises(LoadError, match=f"{COPY_ENV}='lots' is not a positive whole number"):
        load_tensor(path)


def test_truncated_npz_member_is_refused(tmp_path):
    path = tmp_path / "t.npz"
    np.savez_compressed(path, input=np.zeros(1000, "f4"))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6,)}
    )
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:  # a header that promises more than the member
        archive.writestr("input.npy", header.getvalue() + bytes(4000))
    with pytest.raises(LoadError, match="declares 4000000 bytes, its record holds 4000"):
        load_tensor(path)


# ---------------------------------------------------------------- odd files, one line each


def test_npy_with_an_overflowing_shape_warns_nothing(tmp_path):
    path = tmp_path / "over.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (2**32, 2**32, 2**32)}
        )
        f.write(bytes(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning would be raised here
        with pytest.raises(LoadError, match="shape too large"):
            load_tensor(path)


@pytest.mark.parametrize("descr", [[("a", "<f4")], ("<f4", (1000,)), "V1000000", "<U100"])
def test_npy_of_records_or_strings_is_refused_before_reading(tmp_path, descr):
    path = tmp_path / "odd.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": (3,)}
        )
        f.truncate(f.tell() + 3 * np.dtype(np.lib.format.descr_to_dtype(descr)).itemsize)
    with pytest.raises(LoadError, match="which torch cannot read"):
        load_tensor(path)


def test_pt_with_a_non_utf8_file_name_loads(tmp_path):
    name = os.fsdecode(b"caf\xe9-\xff.pt")  # not UTF-8: surrogate escapes in Python
    path = tmp_path / name
    try:
        torch.save(call_tensors(), path)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    saved = load(path)
    assert saved.input.shape == (4, 3) and str(path) in saved.source


@contextmanager
def unreadable(path):
    """`path` cannot be read by this process: mode 000, and not root (root reads anything)."""
    os.chmod(path, 0)
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)  # nobody; the real uid stays root, so this is undone below
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def open_folder():
    """A folder anyone may look into (pytest's own are closed to other users), removed after."""
    folder = tempfile.mkdtemp(prefix="cediag-")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npy"])
@pytest.mark.parametrize("closed", ["file", "folder"])
def test_unreadable_file_says_permission_denied(open_folder, suffix, closed):
    path = open_folder / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros(3, "f4"))
    elif suffix == ".pt":
        torch.save(call_tensors(), path)
    else:
        save_file(call_tensors(), str(path))
    # a closed file fails when opened; a closed folder already when the file is looked up
    denied = pytest.raises(LoadError, match="cannot be read \\(permission denied\\)")
    with unreadable(path if closed == "file" else open_folder), denied as info:
        load_tensor(path)
    os.chmod(open_folder, 0o755)
    assert "corrupt" not in str(info.value) and str(path) in str(info.value)


def test_permission_error_while_reading_is_not_called_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "batch.pt"
    torch.save(call_tensors(), path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(LoadError, match="cannot be read \\(permission denied\\)"):
        load(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipe_is_not_a_regular_file(tmp_path):
    path = tmp_path / "batch.pt"
    os.mkfifo(path)
    with pytest.raises(LoadError, match="is not a regular file"):
        load(path)  # and does not block waiting for a writer


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b" " * (5 * 2**20) + b"{}", "larger than 4 MiB"),
        (b"[" * 100_000 + b"]" * 100_000, "ignored the sidecar"),
        (b'{"options": [1, 2]}', "its options are not an object"),
        (b'{"options": {"reduction": "sum"}}\xff', "ignored the sidecar"),
    ],
)
def test_odd_sidecars_are_notes_not_failures(tmp_path, content, says):
    path = tmp_path / "dump.safetensors"
    save_file(call_tensors(), str(path), metadata={"cediag_dump": "1", "reduction": "mean"})
    path.with_suffix(".json").write_bytes(content)
    saved = load(path)
    assert saved.options == {"reduction": "mean"}
    assert any(says in note for note in saved.notes), saved.notes


def test_load_error_survives_pickling():
    error = LoadError("x.pt", "is empty", "save it again")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.problem, copy.hint, str(copy)) == (
        "x.pt",
        "is empty",
        "save it again",
        str(error),
    )


# ---------------------------------------------------------------- SavedCall in a notebook


def test_saved_call_repr_summarises_without_values(tmp_path):
    x = torch.full((4, 3), 12345.678)
    saved = SavedCall(x, torch.tensor([0, 1, 2, 0]), torch.ones(3), {"ignore_index": 2}, "b.pt")
    text = repr(saved)
    assert text == (
        "SavedCall(input=(4, 3) float32, target=(4,) int64, weight=(3,) float32, "
        "options={'ignore_index': 2}, source='b.pt')"
    )
    page = saved._repr_html_()
    assert "12345" not in text + page and "tensor(" not in text + page
    assert "<td>(4, 3) float32</td>" in page and "ignore_index=2" in page


def test_saved_call_html_escapes_file_names():
    saved = SavedCall(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), source="<b>.pt")
    assert "&lt;b&gt;.pt" in saved._repr_html_()


# ---------------------------------------------------------------- the command line: exit 2, one line


@pytest.mark.parametrize("crafted", ["bytearray", "overlap", "bomb", "pipe"])
def test_cli_refuses_crafted_files_with_exit_2_and_one_line(tmp_path, monkeypatch, crafted):
    from typer.testing import CliRunner

    from cediag import ExitCode
    from cediag.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(COPY_ENV, "1")
    if crafted == "bytearray":
        path = tmp_path / "evil.pt"
        write_pt_calling(path, bytearray, GiB)
        says = "refused to unpickle: it uses builtins.bytearray"
    elif crafted == "overlap":
        path = tmp_path / "overlap.safetensors"
        header, data_len, says = MALFORMED["overlapping offsets"]
        write_safetensors(path, header, bytes(data_len))
    elif crafted == "bomb":
        path = tmp_path / "bomb.npz"
        write_npz_bomb(path, 8 * 2**20)
        says = "it is compressed), more than the 1 MiB cediag copies from one file"
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        path = tmp_path / "pipe.pt"
        os.mkfifo(path)
        says = "is not a regular file"
    result = CliRunner().invoke(app, ["check", str(path)], catch_exceptions=False)
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"cediag: error: {path}: ") and says in line for line in lines)
    assert "Traceback" not in result.stderr
