"""Training: the release's losses, a short run that lowers the loss, resuming, DDP with gloo."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from samwise_ros import Samwise, SamwiseConfig
from samwise_ros.data.synthetic import demo_scene
from samwise_ros.training.losses import cme_loss, dice_loss, object_score_loss, sigmoid_focal_loss
from samwise_ros.training.trainer import (TrainSettings, Trainer, append_csv, cme_label_shares, distributed_backend,
                                         lr_factor, read_csv)


@dataclass
class Clip:
    frames: np.ndarray
    masks: np.ndarray
    expression: str
    attributes: np.ndarray | None = None


class SceneClips(torch.utils.data.Dataset):
    """Clips of the demo scene at a few start frames (the trainer only needs frames/masks/expression)."""

    def __init__(self, starts, length=6):
        self.starts, self.length = starts, length

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, index):
        scene = demo_scene()
        rendered = [scene.render(self.starts[index] + t) for t in range(self.length)]
        frames = np.stack([image[::3, ::3] for image, _ in rendered])
        masks = np.stack([mask[::3, ::3] for _, mask in rendered])
        return Clip(frames, masks, scene.expression)


def test_focal_and_dice_match_hand_computed_values():
    logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0]])
    # p = 0.5: ce = ln 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25 / 0.75 -> mean of the two pixels
    expected_focal = (0.25 * 0.25 + 0.75 * 0.25) * np.log(2) / 2
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(expected_focal, rel=1e-6)
    # dice: 1 - (2 * 0.5 + 1) / (1.0 + 1 + 1)
    assert dice_loss(logits, targets).item() == pytest.approx(1 - 2 / 3, rel=1e-6)


def test_cme_loss_weights_switches_and_ignores_minus_one():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, -3.0]])
    labels = torch.tensor([1, 0, -1])
    # both valid rows have loss ln 2; weights 2 and 1 -> weighted mean is ln 2
    assert cme_loss(logits, labels).item() == pytest.approx(np.log(2), rel=1e-6)
    assert cme_loss(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def test_object_score_loss_is_binary_cross_entropy():
    logits = torch.tensor([0.0, 2.0])
    present = torch.tensor([True, False])
    expected = (np.log(2) + np.log(1 + np.exp(2.0))) / 2
    assert object_score_loss(logits, present).item() == pytest.approx(expected, rel=1e-6)


def test_from_scratch_trains_the_object_score_head_and_fine_tuning_leaves_it(tokenizer, tmp_path):
    """SAM2's object-score head gates every mask at inference: a model trained from scratch must learn
    it (SAM2's objectness loss); the release's recipe keeps it frozen and adds no such loss."""
    head = "sam.sam_mask_decoder.pred_obj_score_head.layers.2.weight"
    for from_scratch in (True, False):
        torch.manual_seed(0)
        model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
        before = model.state_dict()[head].clone()
        trainer = Trainer(model, SceneClips([0]), TrainSettings(output=tmp_path, lr=1e-3, from_scratch=from_scratch))
        values = trainer.step([SceneClips([0])[0]])
        assert ("loss_object" in values) == from_scratch
        assert torch.equal(model.state_dict()[head], before) != from_scratch


@pytest.fixture
def fresh_tiny(tokenizer):
    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)


def test_a_short_run_lowers_the_loss(fresh_tiny, tmp_path):
    settings = TrainSettings(output=tmp_path, epochs=1, batch_size=1, lr=1e-3, log_every=1)
    trainer = Trainer(fresh_tiny, SceneClips([0] * 8), settings)
    losses = [trainer.step([SceneClips([0])[0]])["loss"] for _ in range(8)]
    assert losses[-1] < 0.85 * losses[0]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_resume_continues_from_the_saved_step(tokenizer, tmp_path):
    def trainer_with(epochs):
        torch.manual_seed(0)
        model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
        return Trainer(model, SceneClips([0, 10]), TrainSettings(output=tmp_path, epochs=epochs, batch_size=1))

    first = trainer_with(1)
    first.fit()
    assert (first.progress.epoch, first.progress.step) == (1, 2)
    assert (tmp_path / "last" / "model.safetensors").is_file() and (tmp_path / "curves.png").is_file()

    second = trainer_with(2)
    second.resume(tmp_path / "last")
    assert (second.progress.epoch, second.progress.step) == (1, 2)
    saved = first.optimizer.state_dict()["state"]
    restored = second.optimizer.state_dict()["state"]
    assert all(torch.equal(saved[k]["exp_avg"], restored[k]["exp_avg"]) for k in saved)
    trained = first.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in second.model.state_dict().items())
    second.fit()
    assert (second.progress.epoch, second.progress.step) == (2, 4)
    assert len(second.progress.history) == 2


def test_from_scratch_trains_with_the_batch_norm_statistics_inference_uses(tokenizer, tmp_path):
    """From scratch: fit() first sets the adapters' BatchNorm statistics from training clips, then
    steps leave them as they are (training and inference normalise alike); the release's recipe
    updates them from each clip, PyTorch's default."""
    for from_scratch in (True, False):
        torch.manual_seed(0)
        model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
        norm = model.adapters[0].vis_down[1]
        settings = TrainSettings(output=tmp_path / str(from_scratch), lr=1e-3, from_scratch=from_scratch)
        trainer = Trainer(model, SceneClips([0, 5]), settings)
        if from_scratch:
            trainer.calibrate_batch_norm(clips=2)
            assert not torch.equal(norm.running_var, torch.ones_like(norm.running_var))
            assert norm.num_batches_tracked.item() == 2
        before = norm.running_mean.clone()
        trainer.step([SceneClips([0])[0]])
        assert torch.equal(norm.running_mean, before) == from_scratch


def test_training_only_the_cme_leaves_every_other_weight_and_statistic_as_it_was(tokenizer, tmp_path, capsys):
    """--train-only cme: the optimiser holds the CME's parameters alone, and a step on a clip the CME
    decides on (frame 5) changes nothing else, not even the frozen adapters' BatchNorm statistics."""
    from samwise_ros.tools.train import parse_args

    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trainer = Trainer(model, SceneClips([0]), TrainSettings(output=tmp_path, lr=1e-3, modules=("cme",)))
    named = dict(model.named_parameters())
    assert {name for name, param in named.items() if any(param is p for p in trainer.parameters)} == {
        name for name in named if name.startswith("cme.")}
    values = trainer.step([SceneClips([0])[0]])
    assert "loss_cme" in values
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.startswith("cme.") for name in changed), changed
    with pytest.raises(SystemExit) as exited:
        parse_args(["--train-only", "cme", "--from-scratch"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith("samwise-train: error: --train-only picks among the release's modules; "
                                            "--from-scratch trains every parameter\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--train-only", "sam"])
    assert exited.value.code == 2
    error = capsys.readouterr().err  # how argparse quotes the choices differs between Python versions
    assert "samwise-train: error: argument --train-only: invalid choice: 'sam' (choose from " in error
    assert all(module in error for module in ("adapters", "cme", "text_prompt"))
    with pytest.raises(ValueError, match="not trainable"):
        model.freeze_for_training(("sam",))


def test_lr_scales_give_a_module_its_own_learning_rate_under_the_schedule(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    settings = TrainSettings(output=tmp_path, lr=1e-3, from_scratch=True, warmup_steps=4,
                             lr_scales={"sam.memory_encoder": 20.0})
    trainer = Trainer(model, SceneClips([0]), settings)
    scaled, rest = trainer.optimizer.param_groups
    encoder = {id(p) for p in model.sam.memory_encoder.parameters()}
    assert {id(p) for p in scaled["params"]} == encoder
    assert not encoder & {id(p) for p in rest["params"]}
    assert len(scaled["params"]) + len(rest["params"]) == len(trainer.parameters)
    trainer.step([SceneClips([0])[0]])
    assert scaled["lr"] == pytest.approx(20 * rest["lr"]) and rest["lr"] == pytest.approx(1e-3 * 2 / 4)
    with pytest.raises(ValueError, match="no trainable parameter"):
        Trainer(model, SceneClips([0]), TrainSettings(output=tmp_path, lr_scales={"sam.memory_encoder": 2.0},
                                                      modules=("cme",)))


def test_memoryless_mask_loss_trains_the_decodings_the_cme_compares_against(tokenizer, tmp_path):
    """The memory-less path runs where the CME window allows (frame 5 of a 6-frame clip); its masks
    keep their graph and get focal + dice only when asked for."""
    from samwise_ros.training.batches import clip_tensors

    torch.manual_seed(0)
    model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    clip = SceneClips([0])[0]
    tensors = clip_tensors(clip.frames, clip.masks, clip.expression, model.image_size, model.device)
    for train_memoryless in (False, True):
        outputs = model.forward_train(tensors.frames, model.tokenize(clip.expression), True, train_memoryless)
        memoryless = [out.memoryless_mask_logits for out in outputs]
        assert [m is not None for m in memoryless] == [False] * 5 + [True]
        assert memoryless[5].shape == outputs[5].mask_logits.shape
        assert memoryless[5].requires_grad == train_memoryless

        settings = TrainSettings(output=tmp_path, lr=1e-3, from_scratch=True, memoryless_mask_loss=train_memoryless)
        values = Trainer(model, SceneClips([0]), settings).step([clip])
        assert ("loss_memoryless" in values) == train_memoryless
        assert {"cme_switch_labels", "cme_ignored_labels"} <= set(values)
    assert values["loss_memoryless"] > 0


def test_training_logs_keep_their_columns_when_a_loss_is_added_on_resuming(tmp_path):
    log = tmp_path / "epochs.csv"
    append_csv(log, {"epoch": 1, "loss": 0.5})
    append_csv(log, {"epoch": 2, "loss": 0.25})
    append_csv(log, {"epoch": 3, "loss_memoryless": 0.75, "loss": 0.125})
    assert read_csv(log) == [{"epoch": "1", "loss": "0.5", "loss_memoryless": ""},
                             {"epoch": "2", "loss": "0.25", "loss_memoryless": ""},
                             {"epoch": "3", "loss": "0.125", "loss_memoryless": "0.75"}]


def test_training_logs_the_shares_of_switch_and_ignored_cme_labels():
    shares = cme_label_shares(torch.tensor([1, 0, -1, 0, 0, 1, 0, 0]))
    assert shares == {"cme_switch_labels": 0.25, "cme_ignored_labels": 0.125}


def test_a_model_that_tracked_first_can_still_be_trained(fresh_tiny, tmp_path):
    """The tracker runs under inference mode; sam2's memory attention must not cache its rotary table
    there (a later training step could not use it)."""
    from samwise_ros.tracker import StreamTracker

    clip = SceneClips([0])[0]
    tracker = StreamTracker(fresh_tiny.eval(), clip_length=2)
    tracker.set_query(clip.expression)
    for index, frame in enumerate(clip.frames[:2]):
        tracker.push(frame, stamp=float(index))
    values = Trainer(fresh_tiny, SceneClips([0]), TrainSettings(output=tmp_path, lr=1e-3)).step([clip])
    assert np.isfinite(values["loss"])


def test_learning_rate_warms_up_then_follows_the_cosine_to_zero():
    assert [lr_factor(step, 10, 2, cosine=False) for step in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 10, 2, cosine=True) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, cosine=True) == pytest.approx(0.5)  # half-way through the decay
    assert lr_factor(10, 10, 2, cosine=True) == pytest.approx(0.0, abs=1e-12)


def test_resume_continues_the_learning_rate_schedule(tokenizer, tmp_path):
    def trainer_with():
        torch.manual_seed(0)
        model = Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)
        settings = TrainSettings(output=tmp_path, epochs=2, batch_size=1, lr=1e-3, warmup_steps=1, cosine=True)
        return Trainer(model, SceneClips([0, 10]), settings)

    first = trainer_with()
    first.settings.epochs = 1  # stop half-way through a 2-epoch (4-step) schedule
    first.fit()
    second = trainer_with()
    second.resume(tmp_path / "last")
    expected = 1e-3 * lr_factor(2, 4, 1, cosine=True)  # the LR of the third step
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_cli_runs_under_torchrun_with_two_gloo_processes(tmp_path):
    import csv
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "samwise_ros.tools.train", "--data", "synthetic", "--train-size", "8", "--eval-size", "1",
               "--clip-length", "6", "--frame-size", "60", "80", "--epochs", "1", "--batch-size", "2",
               "--from-scratch", "--lr", "1e-3", "--device", "cpu", "--output", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    # each rank's own lines first: the rank that failed first says why, the others only lose their peer
    rank_lines = [line for line in done.stderr.splitlines() if line.startswith("[rank0]")]
    rank_lines += [line for line in done.stderr.splitlines() if line.startswith("[rank1]")]
    assert done.returncode == 0, "\n".join(rank_lines[-60:]) + "\n" + done.stderr[-2000:]
    with open(tmp_path / "epochs.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert int(row["step"]) == 2  # 8 clips shared by 2 ranks, two clips per step (one DDP forward each)
    assert 0.0 <= float(row["eval_JF"]) <= 1.0
    assert row["eval_JF_appearance"] == row["eval_JF"] and "eval_JF_time" not in row  # 1 held-out clip: one kind
    assert (tmp_path / "last" / "model.safetensors").is_file() and (tmp_path / "curves.png").is_file()


def test_processes_share_a_gpu_over_gloo_and_own_gpus_over_nccl():
    assert distributed_backend(world_size=2, gpus=0) == "gloo"
    assert distributed_backend(world_size=4, gpus=1) == "gloo"  # NCCL refuses two ranks on one device
    assert distributed_backend(world_size=2, gpus=2) == "nccl"


def test_with_history_clips_only_the_last_clip_is_trained_on(fresh_tiny, tmp_path):
    """Streams of 2 clips of 3: the first fills the memory; its masks must not change the losses, the
    last clip's must."""
    settings = TrainSettings(output=tmp_path, batch_size=1, from_scratch=True, history_clips=1)
    trainer = Trainer(fresh_tiny, SceneClips([0], length=6), settings)
    stream = SceneClips([0], length=6)[0]

    def losses_with(masks):
        torch.manual_seed(0)
        with torch.no_grad():
            losses, _ = trainer.network([Clip(stream.frames, masks, stream.expression)])
        return {name: value.item() for name, value in losses.items()}

    reference = losses_with(stream.masks)
    history_blanked = stream.masks.copy()
    history_blanked[:3] = False
    last_blanked = stream.masks.copy()
    last_blanked[3:] = False
    assert losses_with(history_blanked) == reference
    assert losses_with(last_blanked)["loss_dice"] != reference["loss_dice"]


def test_cli_trains_on_streams_of_clips(tmp_path, capsys):
    from samwise_ros.tools.train import main

    assert main(["--data", "synthetic", "--config", "tiny", "--from-scratch", "--history-clips", "1",
                 "--clip-length", "3", "--train-size", "2", "--eval-size", "0", "--frame-size", "48", "64",
                 "--epochs", "1", "--batch-size", "1", "--device", "cpu", "--output", str(tmp_path)]) == 0
    (row,) = read_csv(tmp_path / "epochs.csv")
    assert int(row["step"]) == 2 and float(row["loss"]) > 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["--data", "refcoco", "--data-root", str(tmp_path), "--history-clips", "1", "--config", "tiny"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "samwise-train: error: --history-clips takes K >= 0 earlier clips of video data (not refcoco's images)\n")


def test_decoder_input_scales_show_adapter_residuals_growing(fresh_tiny):
    """The per-epoch log's monitor of what saturated the shipped weights' decoder attention: inflating
    an adapter's output (its BatchNorm scale, as fast from-scratch training does) shows up in it."""
    from samwise_ros.training.evaluation import decoder_input_scales

    clip = SceneClips([0], length=3)[0]
    fresh_tiny.eval()
    fresh = decoder_input_scales(fresh_tiny, clip)
    assert 0 < fresh["image_embedding_std"] < 5 and 0 < fresh["text_prompt_std"] < 5
    with torch.no_grad():
        fresh_tiny.adapters[1].vis_up[1].weight.mul_(1000.0)  # the stride-16 level's adapter
    grown = decoder_input_scales(fresh_tiny, clip)
    assert grown["image_embedding_std"] > 3 * fresh["image_embedding_std"]
