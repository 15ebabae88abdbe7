from __future__ import annotations

import re
from unittest import mock

import numpy as np
import pytest
from huggingface_hub import DatasetCard

from d2c_hf.condensed.card import (
    FIGURES,
    _within_class_percentiles,
    describe_model,
    make_figures,
    render_card,
)
from d2c_hf.condensed.dataset import CondensedDataset
from helpers_condensed import build_condensed, synthetic_condensed

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def condensed(local_hub, digits_small):
    return build_condensed(local_hub, digits_small, images_per_class=3)


def test_card_states_the_configuration_and_embeds_existing_figures(condensed, tmp_path):
    figures = make_figures(condensed, tmp_path / "figures")
    assert set(figures) == {"difficulty", "montage", "counts"}
    for path in figures.values():
        assert path.read_bytes()[:8] == PNG_MAGIC
    relative = {name: f"figures/{path.name}" for name, path in figures.items()}
    text = render_card(condensed, figures=relative, repo_id="me/digits-d2c")
    (tmp_path / "README.md").write_text(text)

    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert sorted(embedded) == sorted(relative.values())
    assert all((tmp_path / link).is_file() for link in embedded)

    card = DatasetCard.load(tmp_path / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["default", "classes", "scores"]
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert card.data.configs[0]["default"] is True

    info = condensed.info
    assert "| selection strategy | `interval` |" in text
    assert "| interval k | 2 |" in text
    assert "| budget | 3 images per class, 30 images realised |" in text
    assert f"weights sha256 `{info['latents']['vae']['sha256'][:12]}`" in text
    assert f"weights sha256 `{info['visual']['encoder']['sha256'][:12]}`" in text
    assert "| latent scaling / shift | 0.18215 / 0 |" in text
    assert "16 tokens (4x4) x 32" in text and "1 CLS/register tokens dropped" in text
    assert "`a photo of a {}`, 16 tokens" in text
    assert 'CondensedDataset.load("me/digits-d2c")' in text
    assert 'load_dataset("me/digits-d2c", "classes", split="train")' in text
    assert "accelerate launch examples/train_sit.py --dataset me/digits-d2c" in text
    assert "Every class reached the requested 3 images." in text
    assert "| 3 | three | 3 |" in text
    assert "loaded from local folders" in text  # the tiny models are not Hub checkpoints
    assert "**Note:** tiny random stand-in models" in text
    assert "arXiv:2507.05914" in text and "@article{huang2025d2c" in text
    assert "CC BY-NC" not in text  # no DiT was used here


def test_card_without_figures_embeds_none(condensed):
    text = render_card(condensed)
    assert "![" not in text
    assert 'CondensedDataset.load("<user>/<dataset>")' in text


def test_card_names_the_dit_licence_and_shortfall():
    synthetic = synthetic_condensed(num_classes=30, per_class=4)
    synthetic.info["budget"]["images_per_class"] = 5  # ask for more than was realised
    text = render_card(synthetic)
    assert "CC BY-NC 4.0" in text
    assert "`facebook/DiT-XL-2-256` @ `abc123`" in text
    assert "30 classes hold fewer than the requested 5 images" in text
    assert "| class | name | images |" in text  # <= 50 classes: a table of counts


def test_figures_are_deterministic_and_aggregate_many_classes(tmp_path):
    synthetic = synthetic_condensed(num_classes=30, per_class=4)
    first = make_figures(synthetic, tmp_path / "a")
    second = make_figures(synthetic, tmp_path / "b")
    assert set(first) == {"difficulty", "counts"}  # no image column: no montage
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes()
    small = make_figures(synthetic_condensed(num_classes=4, per_class=4), tmp_path / "c")
    assert small["difficulty"].read_bytes() != first["difficulty"].read_bytes()


def test_within_class_percentiles_known_answer():
    all_scores = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0], np.float32)
    all_labels = np.array([0, 0, 0, 0, 1, 1])
    sel_scores = np.array([1.0, 3.0, 20.0], np.float32)
    sel_labels = np.array([0, 0, 1])
    np.testing.assert_allclose(
        _within_class_percentiles(all_scores, all_labels, sel_scores, sel_labels), [0.0, 0.5, 0.5]
    )


def test_describe_model():
    assert describe_model(
        {"class": "AutoencoderKL", "name_or_path": "stabilityai/sd-vae-ft-ema", "revision": "f" * 40}
    ) == (f"`stabilityai/sd-vae-ft-ema` @ `{'f' * 12}` (AutoencoderKL)")
    local = describe_model(
        {"class": "T5EncoderModel", "name_or_path": "/data/models/t5", "sha256": "ab" * 32}
    )
    assert local == f"local folder `t5` (weights sha256 `{'ab' * 6}`) (T5EncoderModel)"
    assert describe_model(None) == "none"


def _with_class_names(condensed, names):
    from datasets import ClassLabel

    from d2c_hf.condensed.dataset import CondensedDataset

    samples = condensed.samples.cast_column("label", ClassLabel(names=names))
    scores = condensed.scores.cast_column("label", ClassLabel(names=names))
    return CondensedDataset(samples, None, condensed.info, scores=scores)


def test_class_names_with_dollar_signs_draw_as_text(tmp_path):
    """Class names are text: '$5 bill' or '$x^2$' never reach matplotlib's mathtext parser."""
    base = synthetic_condensed(num_classes=4, per_class=2, total_per_class=20)
    names = ["$5 bill", "$x_$", r"$\foo$", r"back\slash"]
    condensed = _with_class_names(base, names)
    path = condensed.save_to_disk(tmp_path / "d")
    assert sorted(p.name for p in (path / "figures").iterdir()) == [FIGURES["counts"], FIGURES["difficulty"]]


def test_a_figure_failure_never_loses_the_dataset(tmp_path, caplog):
    base = synthetic_condensed(num_classes=4, per_class=2, total_per_class=20)
    with mock.patch("d2c_hf.condensed.card._counts_figure", side_effect=RuntimeError("boom")):
        path = base.save_to_disk(tmp_path / "d")
    assert "figures could not be drawn (RuntimeError: boom)" in caplog.text
    assert not (path / "figures").exists()
    assert "![" not in (path / "README.md").read_text()
    assert len(CondensedDataset.load(path)) == len(base)
