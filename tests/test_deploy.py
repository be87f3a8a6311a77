"""What `python -m recsys.deploy` puts on a Space, checked offline: everything the app runs from, nothing else."""

from __future__ import annotations

import subprocess

import pytest

from recsys.deploy import REPO_ROOT, deploy, space_files, space_variables


def test_the_space_gets_the_app_its_requirements_and_the_committed_checkpoints():
    files = space_files()
    front_matter = (REPO_ROOT / "README.md").read_text().split("---")[1]
    assert "app_file: app.py" in front_matter and {"app.py", "README.md", "requirements.txt"} <= set(files)
    python = {str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "recsys").rglob("*.py")}
    assert python <= set(files)  # every module the app may import
    for folder in ("lrurec-ml-latest-small", "llamarec-smollm2-135m-ml-latest-small"):
        assert {f"checkpoints/{folder}/config.json" if folder.startswith("lrurec") else
                f"checkpoints/{folder}/adapter_config.json"} <= set(files)
        assert any(path.startswith(f"checkpoints/{folder}/") and path.endswith(".safetensors") for path in files)
    assert not any(path.startswith(("tests/", ".ci/", ".venv", "runs/", "data/")) for path in files)
    assert sum((REPO_ROOT / path).stat().st_size for path in files) < 60e6


def test_only_tracked_files_go_up(tmp_path):
    """A virtual environment, caches, run outputs and a data set in the checkout stay behind: git does not track
    them."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("app.py", "recsys/pipeline.py", "tests/test_app.py", ".ci/run", ".venv/bin/python", "runs/log.txt",
                 "data/amazon-beauty/items.csv", "recsys/__pycache__/pipeline.cpython-311.pyc"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / ".gitignore").write_text(".venv/\nruns/\ndata/\n__pycache__/\n")
    git("init", "-q")
    git("add", "-A")
    assert space_files(tmp_path) == ["app.py", "recsys/pipeline.py"]


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="not a git checkout"):
        space_files(tmp_path)


class FakeHub:
    """Records what `deploy` asks of huggingface_hub's HfApi."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_deploy_creates_a_gradio_space_sets_the_model_and_uploads_the_file_set():
    hub = FakeHub()
    adapter = "checkpoints/llamarec-smollm2-135m-ml-latest-small"
    page = deploy("teacher/llamarec", base_model="Qwen/Qwen2.5-7B-Instruct", adapter=adapter, api=hub)
    assert page == "https://huggingface.co/spaces/teacher/llamarec"
    (create, args, kwargs), *variables, (upload, _, uploaded) = hub.calls
    assert create == "create_repo" and kwargs["space_sdk"] == "gradio" and kwargs["repo_type"] == "space"
    assert [call[1] for call in variables] == [("teacher/llamarec", "LLAMAREC_BASE_MODEL", "Qwen/Qwen2.5-7B-Instruct"),
                                               ("teacher/llamarec", "LLAMAREC_ADAPTER", adapter)]
    assert upload == "upload_folder" and uploaded["allow_patterns"] == space_files()
    assert space_variables(None, None) == {}  # the default model needs no variable


def test_an_adapter_that_would_not_go_up_is_refused_before_anything_is_asked():
    hub = FakeHub()
    with pytest.raises(RuntimeError, match="runs/zero-shot is not among the files that go up"):
        deploy("teacher/llamarec", base_model="Qwen/Qwen2.5-7B-Instruct", adapter="runs/zero-shot", api=hub)
    assert hub.calls == []
