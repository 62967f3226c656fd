"""A new model family is one folder: `import_families` finds it, its presets
register themselves and `from_preset` builds them, with nothing else to edit."""

import sys
import textwrap

import numpy as np
import pytest

from keras_sparse_moe import presets
from keras_sparse_moe.models import import_families

FAMILY = '''
import keras
import keras_hub

from keras_sparse_moe import SparseMoE
from keras_sparse_moe.presets import register_preset


@keras.saving.register_keras_serializable(package="ToyFamily")
class ToyMoEBackbone(keras_hub.models.Backbone):
    """Tokens -> one SparseMoE layer."""

    def __init__(self, hidden_dim, num_experts, **kwargs):
        inputs = keras.Input((None, hidden_dim))
        outputs = SparseMoE(num_experts=num_experts, intermediate_dim=2 * hidden_dim)(inputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.hidden_dim, self.num_experts = hidden_dim, num_experts

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "num_experts": self.num_experts}


register_preset("toy_moe_family_demo", family="toy_moe", description="A toy family.",
                backbone_cls=ToyMoEBackbone,
                backbone_config={"hidden_dim": 8, "num_experts": 4}, overwrite=True)
'''


@pytest.mark.single_backend
def test_a_family_folder_registers_its_presets(tmp_path, monkeypatch):
    root = tmp_path / "ksm_toy_models"
    (root / "toy_moe").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "toy_moe" / "__init__.py").write_text(textwrap.dedent(FAMILY))
    (root / "not_a_family.py").write_text("raise RuntimeError('modules are not families')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert import_families([str(root)], "ksm_toy_models") == ["toy_moe"]
        rows = presets.list_presets(family="toy_moe", params=False)
        assert [(r["name"], r["backbone"]) for r in rows] == [
            ("toy_moe_family_demo", "ToyMoEBackbone")]
        backbone = presets.from_preset("toy_moe_family_demo")
        assert type(backbone).__name__ == "ToyMoEBackbone"
        assert backbone(np.zeros((2, 5, 8), "float32")).shape == (2, 5, 8)
    finally:
        presets.unregister_preset("toy_moe_family_demo")
        for name in [n for n in sys.modules if n.startswith("ksm_toy_models")]:
            del sys.modules[name]
