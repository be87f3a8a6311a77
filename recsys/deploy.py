"""`python -m recsys.deploy OWNER/NAME`: put the app on a Hugging Face Space in one command.

The Space gets the files the app runs from, and nothing else: the repository's tracked files (`git ls-files`:
never a virtual environment, a cache, a run's output or a data set's files), less the tests and the CI. Binary files
(the safetensors) go up the way the Hub requires them, as LFS/Xet objects: huggingface_hub's upload does this. The
Space runs `python app.py` without flags, so another base model or adapter is set as the Space's variables
(`LLAMAREC_BASE_MODEL`, `LLAMAREC_ADAPTER`); a gated model also needs the secret `HF_TOKEN`, set in the Space's
settings. Needs a token with write access (`hf auth login`, or $HF_TOKEN) and the hub.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# tracked, but not what a Space runs: the test suite (with its fixtures) and the CI script
LEFT_OUT = ("tests/", ".ci/", ".gitignore")


def space_files(root: str | Path = REPO_ROOT) -> list[str]:
    """The repository-relative paths a Space needs: every file git tracks in `root`, less LEFT_OUT. Raises
    RuntimeError when `root` is not a git checkout (the tracked files are what says what belongs to the app)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"{root} is not a git checkout: deploy from a clone of the repository") from error
    return sorted(path for path in listed.stdout.split("\0")
                  if path and not path.startswith(LEFT_OUT) and (Path(root) / path).is_file())


def space_variables(base_model: str | None, adapter: str | None) -> dict[str, str]:
    """The Space's variables for the model it serves (none: the default model and the committed adapter)."""
    chosen = {"LLAMAREC_BASE_MODEL": base_model, "LLAMAREC_ADAPTER": adapter}
    return {key: value for key, value in chosen.items() if value}


def deploy(space_id: str, root: str | Path = REPO_ROOT, base_model: str | None = None, adapter: str | None = None,
           private: bool = False, api=None) -> str:
    """Create the Space `space_id` (a Gradio Space) if needed, set its variables, upload `space_files(root)` in one
    commit; returns the Space's page. `api`: a huggingface_hub `HfApi` (default: one with the saved token)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    files = space_files(root)
    if adapter and not any(path.startswith(f"{Path(adapter).as_posix().rstrip('/')}/") for path in files):
        raise RuntimeError(f"the adapter {adapter} is not among the files that go up (git does not track it): commit "
                           "its folder first, or the Space would look for it in vain")
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    for key, value in space_variables(base_model, adapter).items():
        api.add_space_variable(space_id, key, value)
    api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(root), allow_patterns=files,
                      commit_message="Deploy the LlamaRec demo")
    return f"https://huggingface.co/spaces/{space_id}"


def main(argv=None) -> None:
    """Parse flags and deploy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", help="the Space's id, OWNER/NAME (created if it does not exist)")
    parser.add_argument("--base-model", default=None, help="serve this hub model instead of the default")
    parser.add_argument("--adapter", default=None,
                        help="its ranker folder, as a path inside the repository (commit it first)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the files it would upload, and stop")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(space_files()))
        return
    try:
        page = deploy(args.space, base_model=args.base_model, adapter=args.adapter, private=args.private)
    except RuntimeError as error:
        raise SystemExit(f"Not deployed: {error}") from error
    print(f"Deployed: {page}")


if __name__ == "__main__":
    main()
