"""The shipped configs: each loads and passes the config's own checks."""

import glob
import os

import pytest

from autorisk_tf.training import load_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), os.pardir, "autorisk_tf",
                                        "configs", "*.yaml")))


def test_the_configs_are_found():
    assert {os.path.basename(p) for p in CONFIGS} >= {"real.yaml", "small.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_each_config_loads(path):
    config = load_config(path)
    assert config.training.steps > 0
    assert config.model.width > 0
    if config.bag_of_ids.separate_ids:
        assert "ids" in config.model.pooling


def test_real_config_decodes_the_ids_part_on_its_own():
    config = load_config(next(p for p in CONFIGS if p.endswith("real.yaml")))
    assert config.bag_of_ids.separate_ids and config.bag_of_ids.loss == "squared"
    assert config.curriculum.bag_of_ids_weight == 10.0


def test_separate_ids_without_the_ids_pooling_is_refused():
    with pytest.raises(ValueError, match="separate_ids needs `ids`"):
        load_config(None, {"bag_of_ids.separate_ids": True, "model.pooling": ["mean"]})


def test_a_config_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {width: 32, num_blocks: 1}\ntraining: {steps: 50}\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        "extends: ../base.yaml\nmodel: {width: 48}\ninput: {batch_size: 4}\n", encoding="utf-8")
    config = load_config(str(tmp_path / "sub" / "child.yaml"), {"training.steps": 7})
    assert (config.model.width, config.model.num_blocks) == (48, 1)
    assert config.input.batch_size == 4 and config.training.steps == 7
    assert "extends" not in config.to_dict()


def test_an_extends_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n", encoding="utf-8")
    with pytest.raises(ValueError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))
