"""The served adapter folded into the weights (`recsys.ranker.folded`) ranks as peft's unfolded LoRA, and the switches
to the base model and to the catalog adapter compute as peft does and leave every weight bit for bit as it was."""

import copy

import pytest
import torch
from conftest import make_llama, make_pipeline

from recsys.opinions import CATALOG_ADAPTER_NAME
from recsys.ranker.folded import fold_served_adapter

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def with_adapters(tokenizer, dtype=torch.float32):
    """The tiny Llama with two random (non-zero) LoRA adapters on every projection: "default" and the catalog one."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS, init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(make_llama(tokenizer).to(dtype), lora)
    model.add_adapter(CATALOG_ADAPTER_NAME, lora)
    return model.eval()


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.named_parameters()}


def opinions(result):
    return (torch.tensor([c.llm_probability for c in result.candidates]),
            torch.tensor([c.base_probability for c in result.candidates]),
            torch.tensor([c.title_probability for c in result.candidates]))


@pytest.fixture(scope="module")
def pipelines(tiny_catalog, tiny_lrurec, tiny_tokenizer):
    """(folded, unfolded) pipelines over copies of one model with adapters."""
    model = with_adapters(tiny_tokenizer)
    folded = make_pipeline(tiny_catalog, tiny_lrurec, copy.deepcopy(model), tiny_tokenizer, adapter="tiny",
                           shared_results=0)
    unfolded = make_pipeline(tiny_catalog, tiny_lrurec, model, tiny_tokenizer, adapter="tiny",
                             shared_results=0, fold_adapter=False)
    return folded, unfolded


def test_every_projection_is_folded_and_ranks_as_unfolded(pipelines):
    folded, unfolded = pipelines
    assert folded.llm.folded is not None and folded.llm.folded.projections == 2 * len(PROJECTIONS)
    assert unfolded.llm.folded is None
    history = [1, 2, 3, 4]
    mine = opinions(folded.recommend(history, compare_base=True, titles=True))
    peft = opinions(unfolded.recommend(history, compare_base=True, titles=True))
    for a, b in zip(mine, peft):  # the adapter's letters, the base model's, the catalog adapter's titles
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(mine[0], mine[1], atol=1e-3)  # the adapter changes the letters: it is not skipped


def test_switching_to_the_base_model_and_the_catalog_adapter_leaves_the_weights_unchanged(pipelines):
    folded, _ = pipelines
    before = parameters(folded.llm.model)
    first = opinions(folded.recommend([5, 6, 7], compare_base=True, titles=True))
    for history in ([8, 9], [10, 11, 12, 13]):
        folded.recommend(history, compare_base=True, titles=True)
    again = opinions(folded.recommend([5, 6, 7], compare_base=True, titles=True))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    after = parameters(folded.llm.model)
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert folded.llm.model.active_adapter == "default"


def test_the_base_model_reading_is_the_model_without_any_adapter(pipelines, tiny_tokenizer):
    folded, _ = pipelines
    result = folded.recommend([1, 2, 3, 4], compare_base=True)
    plain = make_llama(tiny_tokenizer)
    with torch.no_grad():
        ids = tiny_tokenizer(result.prompt.text, return_tensors="pt").input_ids
        expected = torch.softmax(plain(input_ids=ids).logits[0, -1, folded.llm.letter_ids], dim=-1)
    assert torch.allclose(torch.tensor([c.base_probability for c in result.candidates]), expected, atol=1e-5)


def test_bf16_weights_are_the_fp32_sum_rounded_once(tiny_tokenizer):
    model = with_adapters(tiny_tokenizer, torch.bfloat16)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = (layer.get_base_layer().weight.float() + layer.get_delta_weight("default").float()).bfloat16()
    folded = fold_served_adapter(model)
    assert folded is not None and torch.equal(layer.get_base_layer().weight, expected)
    with folded.unfolded():
        assert not torch.equal(layer.get_base_layer().weight, expected)


def test_nothing_to_fold_leaves_the_model_alone(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    plain = make_llama(tiny_tokenizer)
    assert fold_served_adapter(plain) is None  # no peft adapter at all
    model = with_adapters(tiny_tokenizer)
    before = parameters(model)
    assert fold_served_adapter(model, adapter="missing") is None
    dora = get_peft_model(make_llama(tiny_tokenizer), LoraConfig(r=4, target_modules=PROJECTIONS, use_dora=True,
                                                                init_lora_weights=False))
    assert fold_served_adapter(dora) is None  # DoRA's magnitudes are not in B·A
    layer = model.base_model.model.model.layers[0].mlp.up_proj.get_base_layer()
    layer.__class__ = type("QuantizedLinear", (torch.nn.Linear,), {})  # as bitsandbytes' layers subclass Linear
    assert fold_served_adapter(model) is None
    after = parameters(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_a_model_is_folded_once_however_many_pipelines_serve_it(tiny_catalog, tiny_lrurec, tiny_tokenizer):
    model = with_adapters(tiny_tokenizer)
    first = make_pipeline(tiny_catalog, tiny_lrurec, model, tiny_tokenizer, adapter="tiny", shared_results=0)
    second = make_pipeline(tiny_catalog, tiny_lrurec, model, tiny_tokenizer, adapter="tiny", shared_results=0)
    assert second.llm.folded is first.llm.folded
    a, b = first.recommend([1, 2, 3]), second.recommend([1, 2, 3])
    assert torch.equal(torch.tensor([c.llm_probability for c in a.candidates]),
                       torch.tensor([c.llm_probability for c in b.candidates]))
    with pytest.raises(ValueError, match="folded with adapter"):
        fold_served_adapter(model, adapter=CATALOG_ADAPTER_NAME)


def test_unfolded_contexts_nest(tiny_tokenizer):
    model = with_adapters(tiny_tokenizer)
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    folded = fold_served_adapter(model)
    folded_weight = layer.get_base_layer().weight
    with folded.unfolded():
        base = layer.get_base_layer().weight
        with folded.unfolded():
            pass
        assert layer.get_base_layer().weight is base  # the outer context still computes unfolded
    assert layer.get_base_layer().weight is folded_weight
