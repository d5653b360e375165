"""Presets: exact configs, exact parameter counts (analytic and meta-device), tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from feldspar.model.catalog import CATALOG, get_spec
from feldspar.model.presets import (
    TINY_ATTENTION_MULTIPLIER,
    TINY_LOGITS_SCALING,
    TINY_VOCAB_SIZE,
    build_random_model,
    count_params,
    granite_config,
    tiny_spec,
)
from feldspar.model.tokenizer_build import ADDED_TOKENS, TINY_REGULAR_SIZE

# granite-models.md, "Parameter counts": (total, active)
PUBLISHED = {
    "h-350m": (340_332_224, 340_332_224),
    "350m": (352_379_904, 352_379_904),
    "h-1b": (1_461_538_368, 1_461_538_368),
    "1b": (1_631_750_144, 1_631_750_144),
    "h-micro": (3_191_396_096, 3_191_396_096),
    "micro": (3_402_836_480, 3_402_836_480),
    "h-tiny": (6_939_037_248, 1_465_470_528),
    "h-small": (32_207_337_984, 8_803_121_664),
}


def _meta_counts(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())  # tied weights appear once
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    config = model.config
    active = total - experts
    if config.num_local_experts:
        active += experts * config.num_experts_per_tok // config.num_local_experts
    return total, active


@pytest.mark.parametrize("short", list(PUBLISHED))
def test_analytic_counts_equal_published(short):
    assert count_params(short) == PUBLISHED[short]
    assert get_spec(short).params == PUBLISHED[short][0]
    assert get_spec(short + "-base").active_params == PUBLISHED[short][1]


@pytest.mark.parametrize("short", list(PUBLISHED))
def test_meta_device_model_counts_equal_published(short):
    model = build_random_model(short, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert _meta_counts(model) == PUBLISHED[short]


@pytest.mark.parametrize("short", ["h-350m", "350m", "h-tiny"])
def test_tiny_analytic_counts_match_tiny_models(short):
    assert _meta_counts(build_random_model(short, tiny=True, device="meta")) == count_params(short, tiny=True)


def test_real_config_fields():
    config = granite_config("granite-4.0-h-tiny")
    assert config.model_type == "granitemoehybrid"
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (100352, 1536, 40)
    assert config.tie_word_embeddings is True
    assert config.embedding_multiplier == 12
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (100257, 100257, 100256)
    assert (config.num_local_experts, config.num_experts_per_tok) == (64, 6)
    assert (config.intermediate_size, config.shared_intermediate_size) == (512, 1024)
    assert (config.mamba_n_heads, config.mamba_d_head, config.mamba_d_state) == (48, 64, 128)
    assert (config.mamba_n_groups, config.mamba_expand, config.mamba_d_conv, config.mamba_chunk_size) == (1, 2, 4, 256)
    assert config.mamba_conv_bias is True and config.mamba_proj_bias is False
    assert config.rms_norm_eps == 1e-5 and config.hidden_act == "silu"
    assert (config.attention_multiplier, config.residual_multiplier, config.logits_scaling) == (0.0078125, 0.22, 6)
    assert config.position_embedding_type == "nope"
    assert config.max_position_embeddings == 131072
    attention = [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"]
    assert attention == [5, 15, 25, 35]
    assert config.layer_types.count("linear_attention") == 36


def test_dense_config_uses_rope_theta_1e7():
    config = granite_config("350m")
    assert config.position_embedding_type == "rope"
    assert config.rope_parameters["rope_theta"] == 1e7
    assert set(config.layer_types) == {"full_attention"}
    assert (config.residual_multiplier, config.logits_scaling, config.max_position_embeddings) == (0.263, 4, 32768)


def test_config_saves_and_reloads(tmp_path):
    from transformers import AutoConfig

    granite_config("h-350m").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "granitemoehybrid"
    assert len(saved["layer_types"]) == 32
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert reloaded.layer_types == granite_config("h-350m").layer_types
    assert reloaded.to_dict()["mamba_d_head"] == 32


def test_published_layer_type_names_load(tmp_path):
    """Real config.json files say "mamba"/"attention"; transformers must map them."""
    from transformers import AutoConfig

    data = granite_config("h-350m").to_dict()
    data["layer_types"] = ["attention" if i in (10, 13, 17, 27) else "mamba" for i in range(32)]
    (tmp_path / "config.json").write_text(json.dumps(data, default=str))
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert reloaded.layer_types == granite_config("h-350m").layer_types


@pytest.mark.parametrize("spec", CATALOG[::2], ids=lambda s: s.short)
def test_tiny_configs_keep_layer_kinds(spec):
    config = granite_config(spec, tiny=True)
    kinds = set(config.layer_types)
    if spec.kind == "dense":
        assert kinds == {"full_attention"}
        assert config.position_embedding_type == "rope"
    else:
        assert kinds == {"full_attention", "linear_attention"}
        assert config.position_embedding_type == "nope"
    if spec.kind == "moe-hybrid":
        assert config.num_local_experts >= 4 and config.num_experts_per_tok == 2
    else:
        assert config.num_local_experts == 0
    assert config.mamba_n_heads * config.mamba_d_head == config.mamba_expand * config.hidden_size
    assert config.max_position_embeddings >= 131072
    assert config.vocab_size == TINY_VOCAB_SIZE and config.vocab_size % 64 == 0
    assert config.vocab_size >= TINY_REGULAR_SIZE + len(ADDED_TOKENS)
    assert config.pad_token_id == TINY_REGULAR_SIZE and config.eos_token_id == TINY_REGULAR_SIZE + 1


def test_tiny_spec_keeps_residual_multiplier_and_scales_logits_up():
    spec = get_spec("h-small")
    tiny = tiny_spec(spec)
    assert (tiny.residual_multiplier, tiny.kind) == (0.22, "moe-hybrid")
    assert (tiny.logits_scaling, tiny.attention_multiplier) == (TINY_LOGITS_SCALING, TINY_ATTENTION_MULTIPLIER)


def test_tiny_mamba_state_decays_slowly():
    """Stock init forgets the SSM state within ~3 tokens; the miniature keeps most of it for 1,000."""
    model = build_random_model("h-tiny", tiny=True, seed=0)
    mixers = [layer.mamba for layer in model.model.layers if layer.mamba is not None]
    assert mixers
    for mixer in mixers:
        decay = torch.exp(-torch.exp(mixer.A_log) * torch.nn.functional.softplus(mixer.dt_bias))
        assert (decay ** 1000 > 0.5).all()
        assert mixer.conv1d.weight.std() > 0.25


@pytest.mark.parametrize("name", ["h-tiny", "350m", "h-1b"])
def test_tiny_model_runs_a_forward(name):
    model = build_random_model(name, tiny=True, seed=0)
    ids = torch.randint(0, TINY_REGULAR_SIZE, (2, 70), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (2, 70, TINY_VOCAB_SIZE)
    assert torch.isfinite(logits).all()


def test_random_weights_depend_on_seed_only():
    a = build_random_model("h-tiny", tiny=True, seed=1).state_dict()
    b = build_random_model("h-tiny", tiny=True, seed=1).state_dict()
    c = build_random_model("h-tiny", tiny=True, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_random_model_is_context_sensitive():
    """Changing the first token must visibly change the last logits (cache bugs must show)."""
    model = build_random_model("h-350m", tiny=True, seed=0)
    ids = torch.randint(0, TINY_REGULAR_SIZE, (1, 40), generator=torch.Generator().manual_seed(3))
    other = ids.clone()
    other[0, 0] = (ids[0, 0] + 7) % TINY_REGULAR_SIZE
    with torch.no_grad():
        first, second = model(ids).logits[0, -1], model(other).logits[0, -1]
    assert ((first - second).norm() / first.norm()).item() > 0.01


def test_bfloat16_build():
    model = build_random_model("350m", tiny=True, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert build_random_model("350m", tiny=True, dtype="bfloat16").dtype == torch.bfloat16


def test_unknown_name_raises_model_not_found():
    from feldspar.model.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        granite_config("granite-4.0-h-huge")


# ---- random checkpoints (model/checkpoint_random.py) -------------------------------------


def test_tiny_checkpoint_round_trips_through_auto_classes(tiny_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from feldspar.model.checkpoint_random import is_random_checkpoint

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert type(model).__name__ == "GraniteMoeHybridForCausalLM"
    assert {"linear_attention", "full_attention"} == set(model.config.layer_types)
    assert model.config.num_local_experts == 4
    assert tokenizer.chat_template and len(tokenizer) <= model.config.vocab_size
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert is_random_checkpoint(tiny_checkpoint)
    expected = build_random_model("h-tiny", tiny=True, seed=0).state_dict()
    loaded = model.state_dict()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    ids = tokenizer("Hello world", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4)


def test_base_checkpoint_has_no_chat_template(tiny_base_checkpoint, tiny_dense_checkpoint):
    from transformers import AutoConfig, AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_base_checkpoint).chat_template is None
    assert AutoTokenizer.from_pretrained(tiny_dense_checkpoint).chat_template is not None
    dense = AutoConfig.from_pretrained(tiny_dense_checkpoint)
    assert set(dense.layer_types) == {"full_attention"} and dense.position_embedding_type == "rope"


def test_is_random_checkpoint_false_for_other_dirs(tmp_path):
    from feldspar.model.checkpoint_random import is_random_checkpoint

    assert not is_random_checkpoint(tmp_path)
    (tmp_path / "feldspar_random.json").write_text('{"random_weights": false}')
    assert not is_random_checkpoint(tmp_path)
    (tmp_path / "feldspar_random.json").write_text("not json")
    assert is_random_checkpoint(tmp_path)


def test_write_random_checkpoint_uses_given_chat_template(tmp_path):
    from transformers import AutoTokenizer

    from feldspar.model.checkpoint_random import write_random_checkpoint

    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    out = write_random_checkpoint("h-350m", tmp_path / "c", tiny=True, chat_template=template)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "hé"}], tokenize=False) == "[user]hé"
    assert "RANDOM WEIGHTS" in (out / "README.md").read_text()
