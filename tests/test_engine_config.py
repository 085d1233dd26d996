"""mindcv_lseg.engine.config: two-stage YAML + CLI parsing, overrides, errors, atomic save/load round trip."""

import os

import pytest
import yaml

from mindcv_lseg.engine.config import (
    ConfigError,
    Option,
    build_parser,
    check_config_dict,
    load_config,
    parse_args,
    save_config,
)

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _yaml(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_without_yaml():
    args = parse_args([])
    assert args.mode == 0 and args.opt == "momentum" and args.decoder_lr_mult == 10.0
    assert args.config == "" and args.resume == "" and args.eval_scales is None


def test_yaml_sets_defaults_and_cli_overrides(tmp_path):
    cfg = _yaml(
        tmp_path,
        "model: lseg_tiny_test\nlr: 1\nbatch_size: 4\nscale_range: [0.75, 1.5]\n"
        "eval_scales: [0.5, 1.0]\ndistribute: false\n",
    )
    args = parse_args(["-c", cfg, "--batch_size", "2", "--eval_scales", "1", "1.25", "1.5", "--distribute"])
    assert args.model == "lseg_tiny_test"
    assert args.lr == 1.0 and isinstance(args.lr, float)  # int in YAML promoted for a float key
    assert args.batch_size == 2  # CLI beats YAML
    assert args.scale_range == [0.75, 1.5]  # YAML list kept
    assert args.eval_scales == [1.0, 1.25, 1.5]  # CLI list replaces YAML list
    assert args.distribute is True  # bare boolean flag
    assert parse_args(["-c", cfg, "--distribute", "false"]).distribute is False


def test_nullable_keys_from_cli_and_yaml(tmp_path):
    cfg = _yaml(tmp_path, "eval_flip: true\nnum_samples: 4\n")
    args = parse_args(["-c", cfg, "--eval_flip", "none", "--num_samples", "null"])
    assert args.eval_flip is None and args.num_samples is None
    assert parse_args(["--eval_scales", "none"]).eval_scales is None


def test_unknown_yaml_key_is_rejected_with_name_and_file(tmp_path):
    cfg = _yaml(tmp_path, "lr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        parse_args(["-c", cfg])
    msg = str(e.value)
    assert "learning_rate" in msg and cfg in msg


def test_typo_gets_a_suggestion(tmp_path):
    cfg = _yaml(tmp_path, "batchsize: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        parse_args(["-c", cfg])


@pytest.mark.parametrize(
    "text, key",
    [
        ("lr: fast\n", "lr"),
        ("batch_size: 2.5\n", "batch_size"),
        ("distribute: 1\n", "distribute"),
        ("scale_range: 0.5\n", "scale_range"),
        ("model: 3\n", "model"),
        ("opt: adam\n", "opt"),
        ("epoch_size: 0\n", "epoch_size"),
        ("crop_size: null\n", "crop_size"),
    ],
)
def test_wrong_yaml_types_and_values_name_the_key(tmp_path, text, key):
    cfg = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_args(["-c", cfg])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lr", "x"], "--lr"),
        (["--lrate", "0.1"], "--lrate"),
        (["--opt", "rmsprop"], "'opt'"),
        (["--batch_size", "0"], "'batch_size'"),
        (["--distribute", "maybe"], "--distribute"),
        (["--eval_mode", "tiles"], "'eval_mode'"),
    ],
)
def test_wrong_cli_values_name_the_flag(argv, needle):
    with pytest.raises(ConfigError) as e:
        parse_args(argv)
    assert needle in str(e.value)


def test_no_prefix_abbreviations():
    with pytest.raises(ConfigError):
        parse_args(["--batch", "2"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_args(["-c", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_args(["-c", _yaml(tmp_path, "lr: [0.1\n")])
    with pytest.raises(ConfigError, match="flat mapping"):
        parse_args(["-c", _yaml(tmp_path, "- lr\n- 0.1\n")])


def test_save_and_reload_round_trip(tmp_path):
    args = parse_args(["--model", "lseg_tiny_test", "--eval_scales", "0.5", "1.0", "--lr", "0.02"])
    path = save_config(args, str(tmp_path / "run" / "config.yaml"))
    assert os.path.isfile(path)
    assert not [f for f in os.listdir(tmp_path / "run") if f.startswith(".tmp")]
    loaded = load_config(path)
    assert "config" not in loaded
    again = parse_args(["-c", path])
    for k, v in vars(args).items():
        if k != "config":
            assert getattr(again, k) == v, k
    assert save_config(args, str(tmp_path / "other.yaml"), rank=1) is None
    assert not (tmp_path / "other.yaml").exists()


def test_extra_options_for_other_tools(tmp_path):
    parser = build_parser("infer", extra_options=[Option("images", str, [], "inputs", nargs="*", group="Infer")])
    cfg = _yaml(tmp_path, "images: [a.jpg, b.jpg]\nmodel: lseg_vitb32\n")
    args = parse_args(["-c", cfg], parser=parser)
    assert args.images == ["a.jpg", "b.jpg"] and args.model == "lseg_vitb32"
    with pytest.raises(ConfigError, match="images"):
        check_config_dict({"images": "a.jpg"}, parser, "x.yaml")
    with pytest.raises(ValueError, match="duplicate"):
        build_parser(extra_options=[Option("lr", float, 0.1, "dup")])


@pytest.mark.parametrize("name", ["lseg_ade20k.yaml", "lseg_vitb32_ade20k.yaml", "lseg_toy.yaml"])
def test_shipped_configs_parse(name):
    args = parse_args(["-c", os.path.join(CONFIGS, name)])
    with open(os.path.join(CONFIGS, name)) as f:
        raw = yaml.safe_load(f)
    for k, v in raw.items():
        assert getattr(args, k) == v or (isinstance(v, int) and getattr(args, k) == float(v)), k


def test_paper_recipe_config():
    args = parse_args(["-c", os.path.join(CONFIGS, "lseg_ade20k.yaml")])
    assert args.model == "lseg_vitl16_384" and args.crop_size == 480 and args.base_size == 520
    assert args.opt == "momentum" and args.momentum == 0.9 and args.weight_decay == 1e-4
    assert args.lr * args.batch_size / args.lr_ref_batch_size == pytest.approx(0.004 / 16 * args.batch_size)
    assert args.decoder_lr_mult == 10.0 and args.scheduler == "polynomial_decay" and args.decay_rate == 0.9
    assert args.epoch_size == 240 and args.gradient_accumulation_steps == 2 and args.weight_decay_filter == "disable"
    assert args.hflip == 0.5


# ---------------------------------------------------------------------------------------------- item 7: checks
@pytest.mark.parametrize(
    "text, key, needle",
    [
        ("crop_size: 100\n", "crop_size", "not a multiple of 32"),
        ("crop_size: 500\n", "crop_size", "use e.g. 480 or 512"),
        ("lr: .nan\n", "lr", "finite"),
        ("lr: .inf\n", "lr", "finite"),
        ("weight_decay: -.inf\n", "weight_decay", "finite"),
        ("weight_decay: .nan\n", "weight_decay", "finite"),
        ("momentum: 5\n", "momentum", "out of range"),
        ("eval_scales: [0]\n", "eval_scales", "out of range"),
        ("eval_scales: [1.0, -0.5]\n", "eval_scales", "out of range"),
        ("scale_range: [2.0, 0.5]\n", "scale_range", "low <= high"),
        ("scale_range: [0.5, 1.0, 2.0]\n", "scale_range", "expected 2 values"),
        ("hflip: 1.5\n", "hflip", "out of range"),
        ("hflip: true\n", "hflip", "horizontal-flip probability"),
        ("loss_scale: 0\n", "loss_scale", "out of range"),
    ],
)
def test_value_checks_name_the_key_and_file(tmp_path, text, key, needle):
    cfg = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_args(["-c", cfg])
    msg = str(e.value)
    assert f"'{key}'" in msg and cfg in msg and needle in msg


@pytest.mark.parametrize(
    "argv, key",
    [
        (["--crop_size", "100"], "crop_size"),
        (["--lr", "nan"], "lr"),
        (["--weight_decay", "inf"], "weight_decay"),
        (["--momentum", "5"], "momentum"),
        (["--eval_scales", "0"], "eval_scales"),
    ],
)
def test_value_checks_on_the_command_line(argv, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_args(argv)


def test_eval_crop_checked_for_the_inference_tools():
    parser = build_parser("infer", tool="infer")
    with pytest.raises(ConfigError, match="'crop_size'.*multiple of 32"):
        parse_args(["--crop_size", "100", "--eval_mode", "slide"], parser=parser)


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    cfg = _yaml(tmp_path, "lr: 0.1\nbatch_size: 2\nlr: 0.2\n")
    with pytest.raises(ConfigError) as e:
        parse_args(["-c", cfg])
    assert str(e.value) == f"{cfg}: duplicate config key 'lr' (lines 1 and 3); keep one"


def test_non_utf8_config_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("lr: 0.1\nlabel_set: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        parse_args(["-c", str(p)])
    assert str(e.value) == f"{p}: not a UTF-8 text file (byte 0xe9 on line 2); save it as UTF-8"


# ------------------------------------------------------------------------------------- item 16: mindcv's names
def test_mindcv_key_names_and_renamed_keys(tmp_path):
    args = parse_args(
        [
            "--gradient_accumulation_steps",
            "4",
            "--weight_decay_filter",
            "norm_and_bias",
            "--hflip",
            "0.25",
            "--drop_rate",
            "0.1",
            "--drop_path_rate",
            "0.2",
        ]
    )
    assert (args.gradient_accumulation_steps, args.weight_decay_filter, args.hflip) == (4, "norm_and_bias", 0.25)
    assert (args.drop_rate, args.drop_path_rate) == (0.1, 0.2)
    with pytest.raises(ConfigError, match="'grad_accumulation' is now 'gradient_accumulation_steps'"):
        parse_args(["-c", _yaml(tmp_path, "grad_accumulation: 2\n")])
    with pytest.raises(ConfigError, match="--grad_accumulation is now --gradient_accumulation_steps"):
        parse_args(["--grad_accumulation", "2"])
    with pytest.raises(ConfigError, match="'filter_bias_and_bn' is now 'weight_decay_filter"):
        parse_args(["-c", _yaml(tmp_path, "filter_bias_and_bn: true\n")])
    with pytest.raises(ConfigError, match="'weight_decay_filter'"):
        parse_args(["--weight_decay_filter", "auto"])


# -------------------------------------------------------------------------------- item 13: per-tool parsers
def _flags(parser):
    return {s for a in parser._actions for s in a.option_strings}


def test_each_tool_has_its_own_flags_and_accepts_a_training_yaml():
    train, val, infer = (build_parser(t, tool=t) for t in ("train", "validate", "infer"))
    assert {"--lr", "--opt", "--momentum", "--gradient_accumulation_steps", "--resume"} <= _flags(train)
    assert not {"--lr", "--opt", "--momentum", "--batch_size", "--resume", "--scheduler"} & _flags(infer)
    assert not {"--lr", "--opt", "--resume"} & _flags(val) and {"--data_dir", "--val_split"} <= _flags(val)
    args = parse_args(["-c", os.path.join(CONFIGS, "lseg_toy.yaml")], parser=infer)  # optimizer keys in YAML: fine
    assert args.model == "lseg_tiny_test" and args.lr == 0.01 and args.crop_size == 128
    with pytest.raises(ConfigError, match="--lr"):
        parse_args(["--lr", "0.1"], parser=infer)
