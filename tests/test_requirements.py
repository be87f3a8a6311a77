"""Install floors: the installed packages meet requirements*.txt, and the transformers APIs the code needs exist.

`bash bench/check_floors.sh` runs these (and the other fast tests) with every requirement installed at
its floor; here they also guard the current environment.
"""

import importlib
import inspect
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT_FILES = ("requirements.txt", "requirements-test.txt")
IMPORT_NAMES = {"gradio_client": "gradio_client", "playwright": "playwright.sync_api"}  # the rest import as named


def requirements() -> list[Requirement]:
    """Every requirement line of REQUIREMENT_FILES (comments and blank lines skipped)."""
    lines = [line.split("#")[0].strip()
             for name in REQUIREMENT_FILES for line in (REPO_ROOT / name).read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def unmet(requirement: Requirement, installed: str | None) -> str | None:
    """One line naming what to do when `installed` (a version, or None) does not satisfy `requirement`; else None."""
    if installed is None:
        return f"{requirement.name} is not installed; requirements say {requirement}: pip install '{requirement}'"
    if not requirement.specifier.contains(installed, prereleases=True):
        return (f"{requirement.name} {installed} is installed, requirements say {requirement}: "
                f"pip install '{requirement}'")
    return None


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def test_every_requirement_has_a_floor_or_pin():
    for requirement in requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", "=="}, f"{requirement} has no floor: bench/check_floors.sh could not install it"


def test_installed_versions_meet_the_floors():
    problems = [line for r in requirements() if (line := unmet(r, installed_version(r.name)))]
    assert not problems, "\n".join(problems)


def test_a_version_below_the_floor_is_named_in_one_line():
    line = unmet(Requirement("transformers>=5.19"), "5.18.0")
    assert line == ("transformers 5.18.0 is installed, requirements say transformers>=5.19: "
                    "pip install 'transformers>=5.19'")
    assert unmet(Requirement("transformers>=5.19"), "5.24.0") is None
    assert unmet(Requirement("torch==2.13.0"), "2.13.0+cpu") is None  # a local build label still matches the pin
    assert "not installed" in unmet(Requirement("peft>=0.20"), None)


@pytest.mark.parametrize("requirement", [r.name for r in requirements()])
def test_every_requirement_imports(requirement):
    importlib.import_module(IMPORT_NAMES.get(requirement, requirement.replace("-", "_")))


def test_the_kv_cache_keyword_is_one_the_model_declares():
    """A keyword the model does not declare would vanish into its **kwargs and the cache would be ignored."""
    from transformers import LlamaForCausalLM
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from recsys.kv_cache import cache_field

    assert cache_field() in inspect.signature(LlamaForCausalLM.forward).parameters
    assert cache_field() in CausalLMOutputWithPast.__dataclass_fields__


def test_the_trainer_reads_loss_is_scaled_for_ga():
    """The letter-loss trainer sets `loss_is_scaled_for_ga` (transformers >= 5.19); older Trainers ignore it and
    leave a per-batch-mean loss undivided over gradient-accumulation steps."""
    from transformers import Trainer

    assert "loss_is_scaled_for_ga" in inspect.getsource(Trainer.training_step)
