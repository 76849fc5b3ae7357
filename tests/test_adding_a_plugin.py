"""docs/adding-a-plugin.md builds: its three files (a family declaration and a plugin per framework),
as the page writes them, register plugins that pass the harness's contract checks
(tests/test_every_plugin.py) in both frameworks, as twins."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from plugins import registry

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "adding-a-plugin.md"


def guide_files() -> dict[str, str]:
    """{path named on a code block's first line: the block}."""
    blocks = re.findall(r"```python\n(# (\S+)\n.*?)```", GUIDE.read_text(), flags=re.S)
    return {path: code for code, path in blocks}


def load(path: str) -> None:
    """Run one of the guide's files as the module its path names, which registers its plugin."""
    name = path.removesuffix(".py").replace("/", ".")
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(guide_files()[path], path, "exec"), module.__dict__)


def test_the_guide_has_a_file_per_framework():
    assert list(guide_files()) == ["plugins/families/gru.py", "plugins/torch/gru.py", "plugins/keras/gru.py"]


@pytest.fixture(scope="module")
def gru_plugins():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    for path in guide_files():
        load(path)
    yield
    for name in ("torch_gru", "keras_gru"):
        registry._REGISTRY.pop(name, None)
    for path in guide_files():
        sys.modules.pop(path.removesuffix(".py").replace("/", "."), None)


def test_the_guides_plugins_pass_the_contract_checks(gru_plugins, small_dataset, tmp_path):
    from plugins.registry import ModelSpec, get_plugin, twin
    from shared_data.dataset import load_dataset
    from tests.test_every_plugin import check_plugin

    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    spec = ModelSpec.of(ds, feats)
    for name in ("torch_gru", "keras_gru"):
        assert get_plugin(name).family == "gru"
        (tmp_path / name).mkdir()
        check_plugin(ds, feats, spec, name, tmp_path / name)
    # twins: Keras' GRU (reset_after) has PyTorch's two bias vectors, so the same parameter count
    assert get_plugin("torch_gru").test_sizes == {"embed_dim": 16, "hidden_dim": 24}
    assert twin("torch_gru") == "keras_gru"
    t = get_plugin("torch_gru").build(spec, embed_dim=16, hidden_dim=24)
    k = get_plugin("keras_gru").build(spec, embed_dim=16, hidden_dim=24)
    assert sum(p.numel() for p in t.parameters()) == k.count_params()
    # and the parity harness: the same function once the weights are copied in layer order
    from shared_data.batches import iterate_batches
    from tests.test_parity_twins import assert_twins_agree

    batch = next(iterate_batches(ds, "test", feats, batch_size=6, seed=0, epoch=0, pad_to_max=True))
    assert_twins_agree("torch_gru", "keras_gru", spec, batch)
