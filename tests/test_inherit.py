"""Weight inheritance (TinyCLIP): a student keeps every k-th teacher layer and leading heads."""

import copy
import json

import pytest
import timm
import torch
from transformers import BertConfig, BertModel

from mclip.config import ConfigError, load_config
from mclip.models.inherit import inherit_weights, leading_slice, teacher_key
from mclip.train.trainer import train
from test_resume import DEMO, _overrides


def _bert(layers, hidden, heads):
    torch.manual_seed(layers * 100 + hidden)
    return BertModel(
        BertConfig(
            vocab_size=300,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        add_pooling_layer=False,
    ).eval()


def test_teacher_key_maps_layer_indices_only():
    assert (
        teacher_key("encoder.encoder.layer.3.attention.self.query.weight", 2)
        == "encoder.encoder.layer.6.attention.self.query.weight"
    )
    assert teacher_key("trunk.blocks.1.attn.qkv.weight", 3) == "trunk.blocks.3.attn.qkv.weight"
    # ResNet stage
    assert teacher_key("trunk.layer1.0.conv1.weight", 2) == "trunk.layer1.0.conv1.weight"


def test_bert_student_with_every_other_layer_computes_the_teachers_layers_0_and_2():
    teacher, student = _bert(4, 64, 4), _bert(2, 64, 4)
    report = inherit_weights(student, teacher, every=2)
    assert not report.kept_init and not report.sliced
    reference = copy.deepcopy(teacher)
    reference.encoder.layer = torch.nn.ModuleList(
        [reference.encoder.layer[0], reference.encoder.layer[2]]
    )
    ids = torch.randint(0, 300, (3, 11))
    torch.testing.assert_close(
        student(input_ids=ids).last_hidden_state, reference(input_ids=ids).last_hidden_state
    )


def test_narrower_bert_student_keeps_the_leading_heads():
    teacher, student = _bert(4, 64, 4), _bert(2, 32, 2)  # head width 16 in both
    report = inherit_weights(student, teacher, every=2)
    assert not report.kept_init and report.sliced
    got = student.encoder.layer[1].attention.self.query.weight
    torch.testing.assert_close(got, teacher.encoder.layer[2].attention.self.query.weight[:32, :32])


def test_vit_student_keeps_every_other_block_and_the_leading_heads_of_q_k_and_v():
    teacher = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, depth=4).eval()
    student = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, depth=2).eval()
    assert not inherit_weights(student, teacher, every=2).kept_init
    reference = copy.deepcopy(teacher)
    reference.blocks = torch.nn.Sequential(reference.blocks[0], reference.blocks[2])
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(student(images), reference(images))

    narrow = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, num_classes=0, depth=2, embed_dim=128, num_heads=2
    ).eval()  # head width 64, as the teacher's
    inherit_weights(narrow, teacher, every=2)
    qkv, source = narrow.blocks[1].attn.qkv.weight, teacher.blocks[2].attn.qkv.weight
    for part in range(3):  # q, k, v each keep their own two leading heads
        torch.testing.assert_close(
            qkv[part * 128 : (part + 1) * 128], source[part * 192 : part * 192 + 128, :128]
        )


def test_vit_student_at_a_smaller_image_size_takes_the_teachers_positions_resampled():
    """A 64 px teacher (4 x 4 patches) into a 32 px student (2 x 2): the student's position
    embeddings are the teacher's grid resampled to 2 x 2 (bicubic, antialiased), not a leading
    slice (the teacher's first row); the class token's entry is kept."""
    teacher = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0, depth=2).eval()
    student = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, num_classes=0, depth=2, embed_dim=128, num_heads=2
    ).eval()
    report = inherit_weights(student, teacher)
    assert report.resampled == ["pos_embed"] and "pos_embed" not in report.kept_init
    reference = (
        torch.nn.functional.interpolate(
            teacher.pos_embed[:, 1:].reshape(1, 4, 4, 192).permute(0, 3, 1, 2),
            size=(2, 2),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .reshape(1, 4, 192)
    )
    torch.testing.assert_close(student.pos_embed[:, 1:], reference[..., :128])
    # class token
    torch.testing.assert_close(student.pos_embed[:, :1], teacher.pos_embed[:, :1, :128])


def test_a_student_larger_than_its_teacher_keeps_its_own_init():
    assert leading_slice(torch.zeros(4, 4), torch.Size([5, 4])) is None
    teacher, student = _bert(2, 32, 2), _bert(2, 64, 4)
    report = inherit_weights(student, teacher)
    assert report.kept_init and not (report.copied + report.sliced)


def test_inheriting_nothing_is_an_error_naming_the_tower():
    from mclip.models.inherit import inherit_towers

    class Pair(torch.nn.Module):
        def __init__(self, text):
            super().__init__()
            self.image, self.text = torch.nn.Linear(2, 2), text

    with pytest.raises(ConfigError, match="model.inherit: the text tower"):
        inherit_towers(Pair(_bert(2, 64, 4)), Pair(_bert(2, 32, 2)), 1, ["image", "text"])


def test_training_run_inherits_from_a_teacher_run(demo_data, tmp_path):
    vit = "model.image.name=vit_tiny_patch16_224"
    teacher = tmp_path / "teacher"
    train(
        load_config(
            DEMO,
            _overrides(demo_data, teacher, 2)
            + [vit, "model.image.model_args={depth: 4}", "model.text.num_layers=2"],
        ),
        quiet=True,
    )
    student = tmp_path / "student"
    train(
        load_config(
            DEMO,
            _overrides(demo_data, student, 2)
            + [
                vit,
                "model.image.model_args={depth: 2}",
                "model.text.num_layers=1",
                f"model.inherit.from_model={teacher}",
                "model.inherit.every=2",
            ],
        ),
        quiet=True,
    )
    records = [json.loads(line) for line in (student / "log.jsonl").read_text().splitlines()]
    event = next(r for r in records if r.get("event") == "inherit")
    assert event["towers"]["image"]["kept_init"] == 0 and event["towers"]["text"]["kept_init"] == 0
    assert event["towers"]["image"]["copied"] > 10


def test_bad_model_args_and_inherit_settings_are_config_errors(demo_data, tmp_path):
    from mclip.models.dual import DualEncoder

    cfg = load_config(DEMO, ["model.image.model_args={depth: 2}"])  # resnet10t has no depth
    with pytest.raises(ConfigError, match="model.image.model_args"):
        DualEncoder(cfg.model)
    with pytest.raises(ConfigError, match="model.inherit.every"):
        load_config(DEMO, ["model.inherit.every=0"])


@pytest.mark.parametrize("spec", ["open_clip:ViT-B-32/openai", "hf:openai/clip-vit-base-patch32"])
def test_inheriting_from_a_foreign_model_spec_is_a_config_error_naming_it(spec):
    from mclip.config import InheritConfig
    from mclip.train.setup import inherit_from

    with pytest.raises(ConfigError, match=f"model.inherit.from_model='{spec}'.*distill.teachers"):
        inherit_from(None, InheritConfig(from_model=spec, every=1, towers=["text"]))
