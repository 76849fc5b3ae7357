"""Every PyTorch plugin with a Keras twin computes the same function as its twin, with no converter of its
family's own: the weights are copied in the order both models created their layers
(tests/parity.py: transfer_in_layer_order), then the teacher-forced logits and the step-by-step decoding
must agree. A new family is checked here the moment it registers; a family whose layers cannot be paired
that way (a custom layer with weights of its own, or layers created in another order) is skipped here
and needs a converter in its own tests/test_parity_<family>.py, as show_attend_tell and transformer have
(OWN_CONVERTER below); any other family that does not pair fails here, so that no twin goes unchecked."""

from __future__ import annotations

import pytest

from plugins.registry import available_names, framework_of, get_plugin, twin

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from tests.parity import (  # noqa: E402
    assert_forward_parity,
    assert_stepwise_matches_teacher_forcing,
    transfer_in_layer_order,
)

PAIRS = [(name, twin(name)) for name in available_names() if framework_of(name) == "torch" and twin(name)]
# families whose layers do not pair in creation order, and whose own parity test copies the weights
OWN_CONVERTER = {"show_attend_tell": "tests/test_parity_attention.py",
                 "transformer": "tests/test_parity_transformer.py"}


@pytest.fixture(scope="module")
def data(small_dataset):
    from plugins.registry import ModelSpec
    from shared_data.batches import iterate_batches
    from shared_data.dataset import load_dataset

    ds = load_dataset(str(small_dataset))
    feats = ds.features("grid")
    batch = next(iterate_batches(ds, "test", feats, batch_size=6, seed=0, epoch=0, pad_to_max=True))
    return ModelSpec.of(ds, feats), batch


def assert_twins_agree(torch_name: str, keras_name: str, spec, batch) -> None:
    """Build both at the family's test sizes, copy the weights in layer order, compare (NotImplementedError
    where the layers cannot be paired)."""
    plugin = get_plugin(torch_name)
    t, k = plugin.build(spec, **plugin.test_sizes), get_plugin(keras_name).build(spec, **plugin.test_sizes)
    transfer_in_layer_order(t, k)
    assert_forward_parity(t, k, batch)
    assert_stepwise_matches_teacher_forcing(t, k, batch)


@pytest.mark.parametrize("torch_name, keras_name", PAIRS, ids=[p[0] for p in PAIRS])
def test_twins_compute_the_same_after_a_transfer_in_layer_order(torch_name, keras_name, data):
    spec, batch = data
    try:
        assert_twins_agree(torch_name, keras_name, spec, batch)
    except NotImplementedError as e:
        family = get_plugin(torch_name).family
        if family not in OWN_CONVERTER:
            raise AssertionError(f"{torch_name} and {keras_name}: no transfer in layer order ({e}); create the "
                                 "layers in the same order in both files, or write the family a converter and "
                                 "list it in OWN_CONVERTER") from None
        pytest.skip(f"{torch_name}: no transfer in layer order ({e}); {OWN_CONVERTER[family]} covers it")


def test_a_transfer_in_layer_order_refuses_layers_that_do_not_pair(data):
    """Pairing by creation order is only as good as the orders: a mismatch is refused, never half-copied."""
    spec, _ = data
    t = get_plugin("torch_concat").build(spec, **get_plugin("torch_concat").test_sizes)
    k = get_plugin("keras_lstm").build(spec, **get_plugin("keras_lstm").test_sizes)
    with pytest.raises(NotImplementedError):
        transfer_in_layer_order(t, k)
