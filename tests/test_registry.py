import subprocess
import sys

import pytest

from ablab.errors import SpecError
from ablab.registry import MODELS, OPTIMIZERS, SCHEDULES, Registry


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(SpecError) as err:
        MODELS.validate({"name": "mpl"})
    msg = str(err.value)
    assert "unknown model 'mpl'" in msg and "Did you mean 'mlp'?" in msg and "linear" in msg


def test_duplicate_registration_raises():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: 2)


def test_description_is_first_docstring_line():
    reg = Registry("thing")

    @reg.register("x")
    def x():
        """First line.

        More text."""

    assert reg.get_entry("x").description == "First line."


def test_unknown_parameter_names_the_field_and_suggests():
    with pytest.raises(SpecError) as err:
        OPTIMIZERS.validate({"name": "sgd", "lr": 0.1, "momentun": 0.9})
    assert err.value.field == "momentun" and "Did you mean 'momentum'?" in err.value.message


def test_wrong_type_and_non_positive_lr():
    with pytest.raises(SpecError) as err:
        OPTIMIZERS.validate({"name": "sgd", "lr": "fast"})
    assert err.value.field == "lr"
    with pytest.raises(SpecError) as err:
        OPTIMIZERS.validate({"name": "sgd", "lr": 0})
    assert err.value.field == "lr" and "greater than 0" in err.value.message


def test_missing_required_parameter():
    with pytest.raises(SpecError, match="needs parameter 'lr'"):
        OPTIMIZERS.validate({"name": "adam"})


def test_defaults_are_filled_so_canonical_form_is_complete():
    spec = OPTIMIZERS.validate({"name": "sgd", "lr": 0.1})
    assert spec == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False, "dampening": 0.0, "weight_decay": 0.0}


def test_duration_in_two_units_is_an_error():
    with pytest.raises(SpecError) as err:
        SCHEDULES.validate({"name": "cosine", "warmup_steps": 10, "warmup_epochs": 1})
    assert "two units" in err.value.message


def test_create_passes_context_and_params():
    model = MODELS.create({"name": "mlp", "widths": [3]}, in_shape=(2, 2), out_dim=5)
    assert model.fc0.in_features == 4 and model[-1].out_features == 5


@pytest.mark.parametrize("first_import", ["import ablab", "import ablab.registry"])
def test_importing_ablab_registers_every_built_in_component(first_import):
    """A fresh process: the first import of ablab (any of its modules) fills every registry."""
    code = (f"{first_import}\n"
            "from ablab.registry import ALL_REGISTRIES, EVALUATORS\n"
            "EVALUATORS.create({'name': 'standard'})\n"
            "print(sorted(kind for kind, registry in ALL_REGISTRIES.items() if not registry.list_names()))\n"
            "print(len(ALL_REGISTRIES), 'mlp' in ALL_REGISTRIES['model'], 'header' in ALL_REGISTRIES['report_section'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "13 True True"]


def test_descriptions_cite_the_thesis_not_internal_notes_or_markup():
    """`ablab list` shows each description: the thesis by chapter/section, never seed002.md line numbers or RST."""
    import re

    import ablab
    from ablab.registry import ALL_REGISTRIES

    ablab.MODELS.list_names()  # the built-ins are registered
    internal = re.compile(r"\bL\d+\b|seed002\.md|``")
    bad = [(kind, e.name, e.description) for kind, reg in ALL_REGISTRIES.items() for e in reg.list_entries()
           if internal.search(e.description)]
    assert not bad, bad


def test_descriptions_are_whole_sentences():
    """The first docstring line is all `ablab list` shows: it ends a sentence, never mid-way (mnist_cnn did)."""
    import ablab
    from ablab.registry import ALL_REGISTRIES

    ablab.MODELS.list_names()
    cut = [(kind, e.name, e.description) for kind, reg in ALL_REGISTRIES.items() for e in reg.list_entries()
           if not e.description.rstrip().endswith((".", ".)"))]
    assert not cut, cut
