"""ablab.artifacts: every artifact name as stored files carry it, and each format's round trip."""

import io
import pickle

import numpy as np
import pytest
import torch

from ablab import artifacts
from ablab.artifacts import load_checkpoint, load_npy, load_npz, save_checkpoint, save_npy, save_npz


class _Code:
    """An object torch.save pickles by reference: code, which a checkpoint must never bring in."""


def test_names_are_those_of_stored_files():
    # literal names from stores written before artifacts.py owned them: a change orphans stored files
    assert artifacts.checkpoint_name(3) == "checkpoint_e0003.pt"
    assert artifacts.checkpoint_name(12345) == "checkpoint_e12345.pt"
    assert artifacts.predictions_name("test", 0) == "predictions_test_e0000.npy"
    assert artifacts.labels_name("valid", 42) == "labels_valid_e0042.npy"
    assert artifacts.tta_predictions_name("tta_flip", "test", 3) == "predictions_tta_flip_test_e0003.npy"
    assert artifacts.tta_predictions_kind("tta_flip_crop") == "tta_flip_crop_predictions"
    assert artifacts.activations_name("test", 7) == "activations_test_e0007.npz"
    assert artifacts.NORM_PARAMS_FILE == "probe_norm_params.npz"
    assert artifacts.RELU_SPARSITY_FILE == "probe_relu_sparsity.npz"
    kinds = (artifacts.CHECKPOINT_KIND, artifacts.PREDICTIONS_KIND, artifacts.LABELS_KIND, artifacts.ACTIVATIONS_KIND)
    assert kinds == ("checkpoint", "predictions", "labels", "activations")


def test_names_of_different_artifacts_never_collide():
    names = {artifacts.predictions_name("test", 1), artifacts.labels_name("test", 1),
             artifacts.tta_predictions_name("tta_flip", "test", 1), artifacts.activations_name("test", 1),
             artifacts.checkpoint_name(1), artifacts.NORM_PARAMS_FILE, artifacts.RELU_SPARSITY_FILE}
    assert len(names) == 7


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(4, 3) / 7,
                                   np.array([3, 0, 9, 1], dtype=np.int64),
                                   np.zeros((0, 10), dtype=np.float32)])
def test_npy_round_trip_keeps_dtype_shape_and_bits(array):
    data = save_npy(array)
    assert data.startswith(b"\x93NUMPY")
    back = load_npy(data)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def test_npy_refuses_pickled_objects():
    with pytest.raises(ValueError):
        save_npy(np.array([{"a": 1}], dtype=object))
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_npy(buf.getvalue())


def test_npz_round_trip_from_bytes_and_from_a_path(tmp_path):
    arrays = {"layer1": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), "steps": np.array([0, 5], np.int64)}
    meta = {"layers": ["layer1"], "examples": 2, "note": "γ"}
    data = save_npz(arrays, meta)
    (tmp_path / "a.npz").write_bytes(data)
    for source in (data, str(tmp_path / "a.npz")):
        back, back_meta = load_npz(source)
        assert back_meta == meta and sorted(back) == sorted(arrays)
        for name, array in arrays.items():
            assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_npz_without_meta_reads_as_empty_meta():
    buf = io.BytesIO()
    np.savez(buf, x=np.ones(3))
    arrays, meta = load_npz(buf.getvalue())
    assert meta == {} and np.array_equal(arrays["x"], np.ones(3))


def test_checkpoint_round_trip_puts_the_format_first():
    state = {"step": 7, "epoch": 2, "seeds": {"init": 1}, "model": {"w": torch.randn(3, 2, dtype=torch.float64)},
             "rng": {"shuffle": torch.Generator().manual_seed(4).get_state()}, "optimizer_spec": "sgd"}
    back = load_checkpoint(save_checkpoint(state))
    assert list(back) == ["format", *state] and back["format"] == artifacts.CHECKPOINT_FORMAT == 1
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["model"]["w"].dtype == torch.float64
    assert torch.equal(back["rng"]["shuffle"], state["rng"]["shuffle"])
    assert {k: back[k] for k in ("step", "epoch", "seeds", "optimizer_spec")} == \
           {k: state[k] for k in ("step", "epoch", "seeds", "optimizer_spec")}


@pytest.mark.parametrize("content", [{"step": 1}, {"format": 2, "step": 1}, [1, 2]])
def test_a_file_of_another_format_is_not_a_checkpoint(content):
    buf = io.BytesIO()
    torch.save(content, buf)
    with pytest.raises(ValueError, match="not an ablab checkpoint"):
        load_checkpoint(buf.getvalue())


def test_a_checkpoint_never_loads_code():
    buf = io.BytesIO()
    torch.save({"format": artifacts.CHECKPOINT_FORMAT, "model": _Code()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(buf.getvalue())
