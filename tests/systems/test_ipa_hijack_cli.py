"""IP-Adapter hijacking on real diffusers pipelines: processor path, the hijack and harden-encoder verbs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trustlab.diffusion.ip_adapter import (
    ProcessorParams,
    image_embeds,
    plus_features,
    processor_preprocess,
    tiny_clip_vision,
)
from trustlab.systems.ipa_hijack.method import HijackAttack, hijack_loss, straight_through


def _photo(h: int, w: int, seed: int) -> torch.Tensor:
    from trustlab.data.photos import HELDOUT_PHOTOS, load_photo

    p = torch.from_numpy(load_photo(HELDOUT_PHOTOS[seed % len(HELDOUT_PHOTOS)])).permute(2, 0, 1)
    return torch.round(p[:, :h, :w] * 255) / 255


def _pil(x: torch.Tensor):  # noqa: ANN202
    from PIL import Image

    from trustlab.diffusion.image_io import to_uint8

    return Image.fromarray(to_uint8(x))


@pytest.fixture(scope="module")
def processor():  # noqa: ANN201
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def test_differentiable_processor_matches_clip_image_processor(processor) -> None:  # noqa: ANN001
    x = _photo(48, 80, 0)
    ours = processor_preprocess(x[None], ProcessorParams.from_processor(processor))
    ref = processor(images=_pil(x), return_tensors="pt").pixel_values
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    assert float((ours - ref).abs().mean()) < 0.03  # PIL vs torch bicubic, both antialiased
    assert float((ours - ref).abs().max()) < 0.5


def test_embedding_moves_through_the_processor_path(processor) -> None:  # noqa: ANN001
    """Attacked through the shortest-edge + crop path, the *saved PNG* moves the real processor's embedding."""
    from trustlab.diffusion.pgd import quantize_toward

    enc = tiny_clip_vision(image_size=32, patch_size=8, seed=3)
    params = ProcessorParams.from_processor(processor)
    x, t = _photo(48, 80, 1), _photo(64, 64, 2)

    def real(img: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return enc(pixel_values=processor(images=_pil(img), return_tensors="pt").pixel_values).image_embeds

    attack = HijackAttack(16 / 255, 30, features=lambda e, z: image_embeds(e, z, params))
    adv = quantize_toward(x[None], attack(enc, x[None], t, torch.Generator().manual_seed(0)), 16 / 255)[0]
    assert float((adv - x).abs().max()) <= 16 / 255 + 1e-6
    e_t = real(t)
    before = float(torch.nn.functional.cosine_similarity(real(x), e_t))
    after = float(torch.nn.functional.cosine_similarity(real(adv), e_t))
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("kind", ["embeds", "plus"])
def test_hijack_attack_is_not_the_identity(kind: str) -> None:
    enc = tiny_clip_vision(image_size=16, seed=4)
    feat = image_embeds if kind == "embeds" else plus_features
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    for best in (False, True):
        adv = HijackAttack(8 / 255, 10, features=feat, best_iterate=best)(enc, x, t, torch.Generator().manual_seed(2))
        with torch.no_grad():
            e_t = feat(enc, t[None])
            l0, l1 = hijack_loss(feat(enc, x), e_t), hijack_loss(feat(enc, adv), e_t)
        assert bool((l1 < l0 - 0.01).all()), (kind, best, l0, l1)


def test_eot_attack_through_jpeg_and_noise() -> None:
    from trustlab.systems.ipa_hijack.baselines import gaussian_noise, jpeg_compress

    enc = tiny_clip_vision(image_size=16, seed=5)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(3)
    for tf, n in ((straight_through(lambda z: jpeg_compress(z, 75)), 1), (lambda z: gaussian_noise(z, 16 / 255, g), 4)):
        adv = HijackAttack(8 / 255, 8, transform=tf, eot_samples=n)(enc, x, t, torch.Generator().manual_seed(2))
        with torch.no_grad():
            e_t = image_embeds(enc, t[None])
            l0 = hijack_loss(image_embeds(enc, tf(x)), e_t)
            l1 = hijack_loss(image_embeds(enc, tf(adv)), e_t)
        assert float(l1.mean()) < float(l0.mean()) - 0.01


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):  # noqa: ANN001, ANN201
    from trustlab.systems.ipa_hijack.pipeline import tiny_pipeline_folder

    return tiny_pipeline_folder(tmp_path_factory.mktemp("pipe"), seed=0)


def _write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(((40, 56), (32, 32))):
        p = folder / f"u{i}.png"
        _pil(_photo(h, w, i)).save(p)
        paths.append(p)
    return paths


def test_hijack_cli_on_a_saved_pipeline(tiny_pipeline, tmp_path: Path) -> None:  # noqa: ANN001
    from PIL import Image

    from trustlab.cli import main

    pdir, ipf = tiny_pipeline
    _write_images(tmp_path / "up")
    tgt = tmp_path / "target.png"
    _pil(_photo(64, 64, 3)).save(tgt)
    out = tmp_path / "out"
    args = ["hijack", "--pipeline", str(pdir), "--ip-adapter", str(ipf), "--images", str(tmp_path / "up"),
            "--target", str(tgt), "--out", str(out), "--eps", "16/255", "--steps", "15", "--gen-steps", "2",
            "--device", "cpu"]
    assert main(args) == 0
    rep = json.loads((out / "hijack_report.json").read_text())
    assert rep["features"] == "embeds" and len(rep["images"]) == 2
    for e in rep["images"]:
        saved = np.asarray(Image.open(e["adversarial"]), dtype=np.int16)
        assert saved.shape[:2] in ((40, 56), (32, 32))
        assert e["linf_255"] <= 16 + 1e-3
        assert e["upload_cos_target_adv"] > e["upload_cos_target_clean"]  # scored through the real processor
    assert (out / "grid.png").is_file()
    assert main(args) == 2  # refuses to overwrite without --force
    assert main(args[:4] + args[6:]) == 2  # no IP-Adapter anywhere: one-line error
    assert main(["hijack", "--pipeline", str(tmp_path), "--images", str(tmp_path / "up"), "--target", str(tgt),
                 "--out", str(tmp_path / "o2")]) == 2  # not a pipeline folder


def test_harden_encoder_cli_writes_a_loadable_encoder(tiny_pipeline, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import CLIPVisionModelWithProjection

    from trustlab.cli import main

    pdir, _ = tiny_pipeline
    out = tmp_path / "robust"
    assert main(["harden-encoder", "--encoder", str(pdir), "--out", str(out), "--steps", "6", "--inner-steps", "2",
                 "--batch-size", "8", "--device", "cpu"]) == 0
    robust = CLIPVisionModelWithProjection.from_pretrained(str(out))
    orig = CLIPVisionModelWithProjection.from_pretrained(str(pdir / "image_encoder"))
    diff = sum(float((a - b).abs().sum()) for a, b in zip(robust.parameters(), orig.parameters(), strict=True))
    assert diff > 0
    rep = json.loads((out / "harden_report.json").read_text())
    assert 0 < rep["clean_cos_to_original"] <= 1
    assert main(["harden-encoder", "--encoder", str(pdir), "--out", str(out), "--steps", "1"]) == 2  # exists
    assert main(["harden-encoder", "--encoder", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 2
