"""Writes python.safetensors and python.json, the fixtures of TestPythonFile.

python.safetensors is written by the reference implementation (the
`safetensors` Python package); python.json holds, for every tensor, the values
the Go reader must return, worked out here with numpy alone:

  - F32: the float32 values themselves;
  - BF16: the bfloat16 bit patterns (rounded from float32 to nearest even with
    integer arithmetic below) and their exact values (bits << 16);
  - F16: numpy's own float16 rounding of the float32 source values, and the
    exact values;
  - I64: the integers.

Run from this folder:  python make_testdata.py   (made with safetensors 0.8.0,
numpy 2.4.6).
"""

import json

import numpy as np
import safetensors
from safetensors import TensorSpec

rng = np.random.default_rng(20240601)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs here)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def bf16_value(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


special = np.array(
    [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-05, 5.9604645e-08, 1e-3, 3.14159265, 1.00390625, 1.01171875],
    dtype=np.float32,
)
f32 = rng.standard_normal((3, 5)).astype(np.float32)
f32[0, :] = [0.0, -0.0, 1.0, 1e-45, 3.4028235e38]
bf_src = np.concatenate([special, rng.standard_normal(13).astype(np.float32) * 100]).reshape(4, 6)
f16_src = np.concatenate([special, rng.standard_normal(13).astype(np.float32)]).reshape(2, 3, 4)
bf = bf16_bits(bf_src)
f16 = f16_src.astype(np.float16)
i64 = np.array([0, 1, -1, 2**31 - 1, -(2**31), 123456789, -42], dtype=np.int64)
big = np.array([1, 2**40], dtype=np.int64)
scalar = np.array(7.25, dtype=np.float32)
empty = np.zeros((2, 0), dtype=np.float32)

arrays = {
    "model.embed.weight": ("float32", f32),
    "model.layers.0.attn.q_proj.weight": ("bfloat16", bf),
    "model.layers.0.mlp.up_proj.weight": ("float16", f16),
    "input_ids": ("int64", i64),
    "big_ids": ("int64", big),
    "scale": ("float32", scalar),
    "empty": ("float32", empty),
}
specs = {}
for name, (dtype, a) in arrays.items():
    assert a.flags.c_contiguous  # (np.ascontiguousarray would turn a scalar into shape [1])
    specs[name] = TensorSpec(dtype=dtype, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
metadata = {"format": "pt", "made_by": "make_testdata.py"}
safetensors.serialize_file(specs, "python.safetensors", metadata=metadata)


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


expected = {
    "metadata": metadata,
    "tensors": {
        "model.embed.weight": {"dtype": "F32", "shape": list(f32.shape), "values": floats(f32)},
        "model.layers.0.attn.q_proj.weight": {
            "dtype": "BF16",
            "shape": list(bf.shape),
            "source": floats(bf_src),
            "bits": [int(v) for v in bf.ravel()],
            "values": floats(bf16_value(bf)),
        },
        "model.layers.0.mlp.up_proj.weight": {
            "dtype": "F16",
            "shape": list(f16.shape),
            "source": floats(f16_src),
            "bits": [int(v) for v in f16.view(np.uint16).ravel()],
            "values": floats(f16),
        },
        "input_ids": {"dtype": "I64", "shape": list(i64.shape), "ints": [int(v) for v in i64]},
        "big_ids": {"dtype": "I64", "shape": list(big.shape), "ints": [int(v) for v in big]},
        "scale": {"dtype": "F32", "shape": [], "values": floats(scalar)},
        "empty": {"dtype": "F32", "shape": [2, 0], "values": []},
    },
}
with open("python.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")

# Read back with the reference reader as a sanity check.
with safetensors.safe_open("python.safetensors", framework="numpy") as f:
    assert sorted(f.keys()) == sorted(arrays), f.keys()
    assert f.metadata() == metadata
    np.testing.assert_array_equal(f.get_tensor("model.embed.weight"), f32)
    np.testing.assert_array_equal(f.get_tensor("input_ids"), i64)
    np.testing.assert_array_equal(f.get_tensor("model.layers.0.mlp.up_proj.weight"), f16)
print("wrote python.safetensors and python.json")
