"""A corrupt or truncated committed file stops start-up with one line naming the file and the command that rebuilds it.

Each test copies a committed checkpoint folder (or a tiny adapter saved here) into tmp_path, breaks
one file, and calls the function that loads it at start-up. The converted-model cache heals itself:
tests/test_base_model_cache.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recsys.errors import CheckpointError
from recsys.data.test_users import COMMAND as TEST_USERS_COMMAND
from recsys.data.test_users import load_test_users
from recsys.pipeline import Pipeline, PipelineConfig
from recsys.ranker.artefacts import PRIOR_FILE, RankerArtefacts
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.model import DEFAULT_ADAPTER, RankerLoadConfig, add_lora, load_adapter
from recsys.ranker.model import TRAIN_COMMAND as RANKER_COMMAND
from recsys.ranker.served import SERVED_COMMAND, SERVED_CONFIG_FILE
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_catalog, load_model
from recsys.retriever.checkpoint import TRAIN_COMMAND as RETRIEVER_COMMAND
from tests.conftest import make_llama

RETRIEVER_FILES = ("config.json", "model.safetensors", "catalog.json", "test_users.json")


def truncate(path: Path) -> None:
    """Keep the first half of the file, as an interrupted copy or download would."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    """Bytes that are neither UTF-8 nor JSON nor safetensors."""
    path.write_bytes(b"\xff\xfe\x00\x9c binary garbage \x80" * 4)


CORRUPTIONS = {"truncated": truncate, "empty": empty, "garbage": garbage}


def assert_names_the_fix(error: BaseException, path: Path, command: str) -> None:
    """One line, the broken file's full path and the command that rebuilds it."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, message
    assert command in message, message


def copy_retriever(tmp_path: Path) -> Path:
    """The files of the committed retriever checkpoint that start-up loads."""
    folder = tmp_path / DEFAULT_CHECKPOINT.name
    folder.mkdir()
    for name in RETRIEVER_FILES:
        shutil.copyfile(DEFAULT_CHECKPOINT / name, folder / name)
    return folder


def load_retriever_file(folder: Path, name: str):
    """Call the start-up loader of one retriever file."""
    if name == "catalog.json":
        load_catalog(folder)
    elif name == "test_users.json":
        load_test_users(folder)
    else:
        load_model(folder)


def expected_for(name: str) -> tuple[type[BaseException], str]:
    """The error type a broken retriever file raises, and the command that rebuilds the file."""
    if name == "test_users.json":  # the data layer raises ValueError; Pipeline.load turns it into CheckpointError
        return ValueError, TEST_USERS_COMMAND
    return CheckpointError, RETRIEVER_COMMAND


def test_the_committed_retriever_files_load(tmp_path):
    folder = copy_retriever(tmp_path)
    for name in RETRIEVER_FILES:
        load_retriever_file(folder, name)


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("name", RETRIEVER_FILES)
def test_corrupt_retriever_file_names_itself_and_the_fix(tmp_path, name, corrupt):
    folder = copy_retriever(tmp_path)
    corrupt(folder / name)
    error_type, command = expected_for(name)
    with pytest.raises(error_type) as raised:
        load_retriever_file(folder, name)
    assert_names_the_fix(raised.value, folder / name, command)


@pytest.mark.parametrize("config", [[], {"num_items": "many"}, {"num_items": -5}, {"hidden_size": [64]}],
                         ids=["list", "text-size", "negative-size", "list-size"])
def test_config_json_with_bad_values_names_itself(tmp_path, config):
    folder = copy_retriever(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config if isinstance(config, list) else {**saved, **config}))
    with pytest.raises(CheckpointError) as raised:
        load_model(folder)
    assert_names_the_fix(raised.value, folder / "config.json", RETRIEVER_COMMAND)


@pytest.mark.parametrize("name", RETRIEVER_FILES)
def test_start_up_stops_with_a_checkpoint_error(tmp_path, name):
    """Through Pipeline.load: every retriever file fails before the ranker is loaded, as a CheckpointError."""
    folder = copy_retriever(tmp_path)
    truncate(folder / name)
    config = PipelineConfig(folder, RankerLoadConfig(base_model=str(tmp_path / "no-base-model"), adapter=None))
    with pytest.raises(CheckpointError) as raised:
        Pipeline.load(config)
    assert_names_the_fix(raised.value, folder / name, expected_for(name)[1])


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, tiny_tokenizer):
    """A LoRA adapter of the tiny Llama saved as the trainer saves one (before its final step: no choice beside it)."""
    folder = tmp_path_factory.mktemp("tiny") / "adapter"
    add_lora(make_llama(tiny_tokenizer)).save_pretrained(folder)
    return folder


@pytest.fixture
def adapter_copy(tmp_path, tiny_adapter):
    return Path(shutil.copytree(tiny_adapter, tmp_path / "adapter"))


def test_the_tiny_adapter_loads(adapter_copy, tiny_tokenizer):
    model = load_adapter(make_llama(tiny_tokenizer), adapter_copy)
    assert type(model).__name__ == "PeftModelForCausalLM"


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_corrupt_adapter_file_names_itself_and_the_fix(adapter_copy, tiny_tokenizer, name, corrupt):
    corrupt(adapter_copy / name)
    with pytest.raises(RuntimeError) as raised:
        load_adapter(make_llama(tiny_tokenizer), adapter_copy)
    assert_names_the_fix(raised.value, adapter_copy / name, RANKER_COMMAND)


@pytest.mark.parametrize("change", [lambda c: [c], lambda c: {k: v for k, v in c.items() if k != "peft_type"},
                                    lambda c: {**c, "r": "eight"}], ids=["list", "no-peft-type", "text-rank"])
def test_adapter_config_with_bad_values_names_itself(adapter_copy, tiny_tokenizer, change):
    path = adapter_copy / "adapter_config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(RuntimeError) as raised:
        load_adapter(make_llama(tiny_tokenizer), adapter_copy)
    assert_names_the_fix(raised.value, path, RANKER_COMMAND)


def test_adapter_of_another_base_model_names_the_weights(tmp_path, tiny_tokenizer):
    """The committed SmolLM2 adapter does not fit the tiny Llama: one line, naming the weights and the fix."""
    folder = Path(shutil.copytree(DEFAULT_ADAPTER, tmp_path / "adapter"))
    with pytest.raises(RuntimeError) as raised:
        load_adapter(make_llama(tiny_tokenizer), folder)
    assert_names_the_fix(raised.value, folder / "adapter_model.safetensors", RANKER_COMMAND)


def test_an_adapter_that_cannot_be_placed_on_the_device_is_not_called_broken(tmp_path, tiny_tokenizer, monkeypatch):
    """Read whole and intact, but the device refuses it (as pinned memory without CUDA did on ZeroGPU): the message
    says so and does not send the owner to retrain a file that is fine."""
    import peft

    folder = Path(shutil.copytree(DEFAULT_ADAPTER, tmp_path / "adapter"))

    def refuse(*args, **kwargs):
        raise RuntimeError("pin_memory=True requires a CUDA or other accelerator backend")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", refuse)
    with pytest.raises(RuntimeError) as raised:
        load_adapter(make_llama(tiny_tokenizer), folder)
    message = str(raised.value)
    assert "is intact but could not be placed on cpu" in message and "pin_memory" in message
    assert RANKER_COMMAND not in message and "\n" not in message


def read_fusion_weights(folder: Path) -> FusionWeights:
    return RankerArtefacts.load(folder).fusion


def read_prompt_config(folder: Path):
    return RankerArtefacts.load(folder).prompt


def copy_served_config(tmp_path: Path) -> Path:
    """The committed served_config.json alone, without co-watch (it needs no counts then): a zero-shot ranker folder
    (no weights, no prior)."""
    folder = tmp_path / DEFAULT_ADAPTER.name
    folder.mkdir()
    saved = json.loads((DEFAULT_ADAPTER / SERVED_CONFIG_FILE).read_text())
    saved["fusion"]["cowatch"], saved["pool"] = 0.0, 20
    (folder / SERVED_CONFIG_FILE).write_text(json.dumps(saved))
    return folder


def test_the_committed_served_config_reads(tmp_path):
    folder = copy_served_config(tmp_path)
    saved = json.loads((folder / SERVED_CONFIG_FILE).read_text())
    assert read_fusion_weights(folder) == FusionWeights(**saved["fusion"])
    assert read_prompt_config(folder).max_history == saved["prompt"]["max_history"]


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("read", [read_fusion_weights, read_prompt_config])
def test_a_corrupt_served_config_names_itself_and_the_fix(tmp_path, read, corrupt):
    folder = copy_served_config(tmp_path)
    corrupt(folder / SERVED_CONFIG_FILE)
    with pytest.raises(CheckpointError) as raised:
        read(folder)
    assert_names_the_fix(raised.value, folder / SERVED_CONFIG_FILE, SERVED_COMMAND)


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_cowatch_counts_name_themselves_and_the_fix(tmp_path, corrupt):
    """The committed co-watch counts: a damaged file stops start-up with one line naming it and the command."""
    folder = Path(shutil.copytree(DEFAULT_ADAPTER, tmp_path / "adapter"))
    corrupt(folder / "cowatch.safetensors")
    with pytest.raises(CheckpointError) as raised:
        RankerArtefacts.load(folder)
    assert_names_the_fix(raised.value, folder / "cowatch.safetensors", "python -m recsys.ranker.prior --write")


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupt_prior_json_names_itself_and_the_fix(tmp_path, corrupt):
    """prior.json (the prior training reads) is read with its folder: a damaged one stops start-up with one line and
    the command."""
    folder = Path(shutil.copytree(DEFAULT_ADAPTER, tmp_path / "adapter"))
    corrupt(folder / PRIOR_FILE)
    with pytest.raises(CheckpointError) as raised:
        RankerArtefacts.load(folder)
    assert_names_the_fix(raised.value, folder / PRIOR_FILE, "python -m recsys.ranker.prior --write")
