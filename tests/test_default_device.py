"""Commands that are no training run put their model on the accelerator when there is one (issue #23 row 13):
`vrlhf eval` with best-of-n, `vrlhf sample`, the demo's evaluations; reward-model training decodes in workers."""

import pytest
import torch
from safetensors.torch import load_file

from vrlhf.models import tiny_checkpoint
from vrlhf.shapes import make_shapes, write_imagefolder
from vrlhf.tasks import get_task


def test_default_device_is_the_variable_then_this_ranks_gpu_then_the_cpu(monkeypatch):
    from vrlhf.device import default_device

    monkeypatch.delenv("VRLHF_DEVICE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert default_device() == torch.device("cpu")  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_device() == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a launcher: its own GPU, as Accelerate picks it
    assert default_device() == torch.device("cuda", 1)
    monkeypatch.setenv("VRLHF_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    rows = make_shapes(6, seed=0, size=24)
    write_imagefolder(rows, root / "data")
    tiny_checkpoint("vision-encoder-decoder", root / "captioner", texts=[c for r in rows for c in r["captions"]])
    return root


def claims_a_gpu(monkeypatch):
    """This machine has no GPU: claim one, so that moving a model onto it fails in a way that says it was tried."""
    monkeypatch.delenv("VRLHF_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return pytest.raises((AssertionError, RuntimeError), match="CUDA")


def test_eval_with_best_of_n_runs_on_the_gpu_when_there_is_one(world, monkeypatch):
    from tuner.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(task="captioning", policy=str(world / "captioner"), data=str(world / "data"), best_of=2,
                     reward=["cider_d=1.0"], json=True)
    assert set(evaluate(cfg)) == {"greedy", "best_of_2"}  # on the CPU here, as before
    with claims_a_gpu(monkeypatch):
        evaluate(cfg)


def test_sampling_into_the_store_runs_on_the_gpu_when_there_is_one(world, monkeypatch, tmp_path):
    from labeler.sampling import sample_round
    from labeler.store import Store

    with claims_a_gpu(monkeypatch):
        sample_round(Store(tmp_path / "labels.db"), get_task("captioning"), str(world / "captioner"),
                     str(world / "data"), k=2, progress=False)


def test_the_demos_evaluations_run_on_the_gpu_when_there_is_one(world, monkeypatch):
    from loop.compare import policy_outputs
    from vrlhf.data import load_rows
    from vrlhf.evaluate import evaluate_policy
    from vrlhf.tasks import get_task

    task, rows = get_task("captioning"), load_rows(world / "data")
    outputs = policy_outputs(task, task.load_policy(world / "captioner"), rows, seed=0)
    assert len(outputs["greedy"]) == len(outputs["sample"]) == len(rows)
    with claims_a_gpu(monkeypatch):
        policy_outputs(task, task.load_policy(world / "captioner"), rows, seed=0)
    with claims_a_gpu(monkeypatch):
        evaluate_policy(task, str(world / "captioner"), str(world / "data"))


def test_reward_training_decodes_in_worker_processes_with_the_main_threads_result(tmp_path):
    """Two DataLoader workers decode, augment and transplant the pairs: the trained weights are bit for bit those
    of decoding on the main thread (same batches, same order, same flips per epoch)."""
    from reward_model.simulate import save_export, simulated_pairs
    from reward_model.train import TrainRewardConfig, train_reward

    save_export(simulated_pairs(get_task("colorization"), 24, seed=3), tmp_path / "export")
    common = dict(task="colorization", data=str(tmp_path / "export"), encoder="vit", vit_hidden=16, vit_layers=1,
                  hidden_size=8, image_size=24, eval_fraction=0.25, epochs=2, batch_size=6, eval_every=3, lr=1e-3,
                  progress=False, augment="flips")
    for workers in (0, 2):
        train_reward(TrainRewardConfig(**common, out=str(tmp_path / f"workers{workers}"), num_workers=workers))
    main, forked = (load_file(str(tmp_path / f"workers{w}" / "model.safetensors")) for w in (0, 2))
    assert main.keys() == forked.keys()
    for name in main:
        assert torch.equal(main[name], forked[name]), name
