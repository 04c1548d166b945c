"""research/: the stand-in pre-training and auxiliary losses the demo weights were trained with, through
the package's Trainer and research's training entry point."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from research.sam2_pretraining import MIN_PROMPT_PIXELS, prompted_track, track_loss
from research.shape_attributes import ShapeAttributeLoss
from research.text_pretraining import AttributeProbes, labelled_expressions, pretrain_text_encoder
from research.train_demo_weights import main as train_demo_weights
from samwise_ros import Samwise, SamwiseConfig
from samwise_ros.data.synthetic import SyntheticReferringVideos, demo_scene
from samwise_ros.tools.train import main as samwise_train
from samwise_ros.training.batches import ClipTensors, clip_tensors
from samwise_ros.training.trainer import TrainSettings, Trainer, read_csv


def fresh_model(tokenizer) -> Samwise:
    torch.manual_seed(0)
    return Samwise(SamwiseConfig.tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer)


def test_text_pretraining_makes_the_sentence_state_tell_expressions_apart(tokenizer):
    """A from-scratch text encoder's sentence state hardly differs between expressions; after a short
    attribute pre-training, linear probes read every said attribute from it for most expressions."""
    model = fresh_model(tokenizer)
    assert len(labelled_expressions()) == 600
    assert pretrain_text_encoder(model, steps=0) < 0.1  # untrained probes: chance
    assert pretrain_text_encoder(model, steps=300) > 0.6


def test_prompt_attribute_loss_trains_the_text_prompt_with_its_probes(tokenizer, tmp_path):
    model = fresh_model(tokenizer)
    probes = AttributeProbes(model, on_prompt=True)
    assert probes.heads[0].in_features == model.sam.sam_prompt_encoder.embed_dim
    prompt_before = model.text_prompt.layers[0].weight.clone()
    probe_before = probes.heads[1].weight.clone()
    clips = SyntheticReferringVideos(length=1, frames=3, size=(96, 128), kinds=("appearance",), seed=3)
    trainer = Trainer(model, clips, TrainSettings(output=tmp_path, lr=1e-3, from_scratch=True), text_loss=probes)
    values = trainer.step([clips[0]])  # a generator phrase
    assert values["loss_text"] > 0
    assert not torch.equal(model.text_prompt.layers[0].weight, prompt_before)
    assert not torch.equal(probes.heads[1].weight, probe_before)
    assert probes(model, ["a sentence the generator never says"]).item() == 0.0


def test_prompted_tracks_box_a_shape_showing_on_the_first_frame():
    scene = demo_scene()
    chosen = set()
    for seed in range(6):
        track = prompted_track(scene, 4, np.random.default_rng(seed))
        assert track.frames.shape == (4, 240, 320, 3) and track.masks.shape == (4, 240, 320)
        # the masks are one shape's visible pixels on every frame
        (index,) = [k for k in range(len(scene.shapes))
                    if all(np.array_equal(mask, replace(scene, target=k).render(t)[1])
                           for t, mask in enumerate(track.masks))]
        chosen.add(index)
        assert track.masks[0].sum() >= MIN_PROMPT_PIXELS
        rows, cols = np.nonzero(track.masks[0])
        low, high = np.array([cols.min(), rows.min()]), np.array([cols.max(), rows.max()]) + 1
        jitter = 0.1 * (high - low)
        assert np.all(np.abs(track.box[:2] - low) <= jitter) and np.all(np.abs(track.box[2:] - high) <= jitter)
    assert len(chosen) > 1  # not always the same shape


def test_prompted_tracking_trains_sam2_only_and_learns_to_follow_the_boxed_shape(tokenizer):
    """SAM2 pre-training: the box on frame 0 and the memory are all the model gets (no text: the
    adapters and text encoder get no gradient); overfitting one track, the later frames follow it."""
    model = fresh_model(tokenizer).train()
    track = prompted_track(demo_scene(), 4, np.random.default_rng(1))
    optimizer = torch.optim.AdamW(model.sam.parameters(), lr=1e-3)
    losses, ious = [], []
    for _ in range(25):
        loss, iou = track_loss(model, track)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        ious.append(iou)
    assert all(p.grad is None for p in [*model.adapters.parameters(), *model.text_encoder.parameters(),
                                        *model.text_prompt.parameters()])
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    assert np.mean(ious[-3:]) > np.mean(ious[:3]) + 0.2


def test_research_cli_pretrains_sam2_then_trains_on_shared_scenes_with_the_shape_attribute_loss(tmp_path, capsys):
    assert train_demo_weights(["--data", "synthetic", "--config", "tiny", "--from-scratch", "--pretrain-sam2", "2",
                               "--expressions-per-scene", "2", "--shape-attribute-loss", "--clip-length", "3",
                               "--train-size", "2", "--eval-size", "0",
                               "--frame-size", "48", "64", "--epochs", "1", "--batch-size", "1", "--device", "cpu",
                               "--output", str(tmp_path)]) == 0
    assert "SAM2 pre-trained for 2 steps: tracked-frame IoU" in capsys.readouterr().out
    (row,) = read_csv(tmp_path / "epochs.csv")
    assert int(row["step"]) == 2 and float(row["loss_shape_attributes"]) > 0
    assert train_demo_weights(["--data", "synthetic", "--init", str(tmp_path / "last"), "--from-scratch",
                               "--shape-attribute-loss", "--clip-length", "3", "--train-size", "1", "--eval-size", "0",
                               "--frame-size", "48", "64", "--epochs", "1", "--batch-size", "1", "--device", "cpu",
                               "--output", str(tmp_path / "fine_tuned")]) == 0
    assert f"auxiliary heads from {tmp_path / 'last'}" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a stand-in for SAM2's pre-training: for models built from scratch
        train_demo_weights(["--data", "synthetic", "--config", "tiny", "--pretrain-sam2", "2",
                            "--output", str(tmp_path)])
    with pytest.raises(SystemExit):  # samwise-train keeps the release's recipe: the stand-ins are research's
        samwise_train(["--data", "synthetic", "--config", "tiny", "--from-scratch", "--pretrain-sam2", "2"])


def test_shape_attribute_loss_teaches_the_image_embedding_what_shapes_look_like(tokenizer, tmp_path):
    """Linear heads on the decoder's image embedding learn each pixel's colour, shape and size on
    synthetic clips, their gradient trains the backbone, and resuming restores them; other data gets
    a clear error."""
    model = fresh_model(tokenizer)
    clips = SyntheticReferringVideos(length=4, frames=3, size=(96, 128), kinds=("appearance",), seed=3)
    attribute_loss = ShapeAttributeLoss(model)
    tensors = clip_tensors(clips[0].frames, clips[0].masks, clips[0].expression, model.image_size, model.device,
                           clips[0].attributes)
    outputs = model.forward_train(tensors.frames, model.tokenize(clips[0].expression))
    attribute_loss(model, outputs, tensors).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sam.image_encoder.trunk.parameters())
    with pytest.raises(ValueError, match="attribute maps"):
        attribute_loss(model, outputs, ClipTensors(tensors.frames, tensors.masks, ""))

    settings = TrainSettings(output=tmp_path, epochs=1, batch_size=2, lr=1e-3, from_scratch=True)
    trainer = Trainer(model, clips, settings, clip_losses={"shape_attributes": attribute_loss})
    losses = [trainer.step([clips[0], clips[1]])["loss_shape_attributes"] for _ in range(15)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])

    trainer.save(tmp_path / "last")
    resumed = Trainer(model, clips, settings, clip_losses={"shape_attributes": ShapeAttributeLoss(model)})
    resumed.resume(tmp_path / "last")
    saved, restored = trainer.auxiliary.state_dict(), resumed.auxiliary.state_dict()
    assert set(saved) == set(restored) and all(torch.equal(saved[k], restored[k]) for k in saved)


def test_fine_tuning_from_a_run_directory_starts_from_its_auxiliary_heads(tokenizer, tmp_path):
    """`--init` with a trainer's directory: the training-only heads come with the weights, the
    optimiser and the schedule start afresh; heads of another kind, or none saved, are left as built."""
    model = fresh_model(tokenizer)
    clips = SyntheticReferringVideos(length=2, frames=3, size=(96, 128), kinds=("appearance",), seed=3)
    settings = TrainSettings(output=tmp_path, epochs=1, batch_size=2, lr=1e-3, from_scratch=True)
    trained = Trainer(model, clips, settings, clip_losses={"shape_attributes": ShapeAttributeLoss(model)})
    trained.step([clips[0], clips[1]])
    trained.save(tmp_path / "run")

    fine_tuning = Trainer(model, clips, settings, clip_losses={"shape_attributes": ShapeAttributeLoss(model)})
    saved = trained.auxiliary.state_dict()
    assert not all(torch.equal(saved[k], v) for k, v in fine_tuning.auxiliary.state_dict().items())
    assert fine_tuning.warm_start_auxiliary(tmp_path / "run")
    assert all(torch.equal(saved[k], v) for k, v in fine_tuning.auxiliary.state_dict().items())
    assert fine_tuning.progress.step == 0 and not fine_tuning.optimizer.state

    assert not Trainer(model, clips, settings).warm_start_auxiliary(tmp_path / "run")  # no heads to take
    model.save(tmp_path / "weights_only")
    other = Trainer(model, clips, settings, clip_losses={"shape_attributes": ShapeAttributeLoss(model)})
    assert not other.warm_start_auxiliary(tmp_path / "weights_only")
