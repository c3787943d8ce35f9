"""params.yaml is read by one frozen pydantic model; bad values fail with one line naming the key."""

from pathlib import Path

import pytest
import yaml

from pipeline.core.io import InputError
from pipeline.core.params import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_committed_params_yaml_is_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    # Every field of the model is spelled out in params.yaml, so `dvc params diff` shows all of them.
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(data) == set(Params.model_fields)
    assert params.frames.fps == 2.0


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"frames": {"fps": -1}}, "frames.fps"),
        ({"frames": {"fps": "fast"}}, "frames.fps"),
        ({"frames": {"fsp": 2.0}}, "frames.fsp"),
        ({"download": {"synthetic": {"n_videos": 0}}}, "download.synthetic.n_videos"),
        ({"riq": {"test_fraction": 1.5}}, "riq.test_fraction"),
        ({"bogus": {}}, "bogus"),
    ],
)
def test_bad_value_names_the_key(patch, key):
    with pytest.raises(InputError) as err:
        parse_params(patch, "params.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"params.yaml: {key}:"), msg


def test_scientific_notation_string_coerces_to_float(tmp_path):
    # PyYAML reads 2e-06 (no dot) as a string; the model must still take it as a float.
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  learning_rate: 2e-06\n")
    assert yaml.safe_load(p.read_text())["train"]["learning_rate"] == "2e-06"
    assert load_params(p).train.learning_rate == pytest.approx(2e-6)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(Exception):
        params.frames.fps = 1.0  # type: ignore[misc]


def test_every_field_has_a_description():
    def walk(model, prefix):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")

    walk(Params, "")


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: not found"):
        load_params(tmp_path / "nope.yaml")
