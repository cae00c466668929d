from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from attrs import frozen

from mill.core.arguments import NonNegativeInt, PositiveInt, structure_arguments
from mill.core.errors import BackendArgumentError, SettingError
from mill.core.evaluation import evaluate
from mill.core.model_spec import parse_model_spec


@frozen
class _Args:
    path: str
    batch_size: PositiveInt | None = None
    workers: NonNegativeInt = 0
    fast: bool = False
    share: float = 0.5
    mode: Literal["greedy", "beam"] = "greedy"
    revision: str | None = None


def _structure(**raw: Any) -> _Args:
    return structure_arguments({"path": "m", **raw}, _Args, "toy")


def test_text_forms_become_their_field_types() -> None:
    args = _structure(batch_size=" 32", workers="0", fast="Yes", share="0.25", mode="beam", revision="none")
    assert args == _Args("m", batch_size=32, workers=0, fast=True, share=0.25, mode="beam", revision=None)
    assert _structure(fast=1).fast is True and _structure(fast="false").fast is False
    assert structure_arguments({"path": Path("models") / "tiny"}, _Args, "toy").path == "models/tiny"


def test_a_model_spec_string_gives_the_same_arguments_as_text() -> None:
    spec = parse_model_spec('toy[path=m,batch_size=8,fast=true,revision="1234"]')
    assert structure_arguments(spec.args, _Args, "toy") == _Args("m", batch_size=8, fast=True, revision="1234")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"batch_size": "many"}, "batch_size='many' must be an integer >= 1"),
        ({"batch_size": True}, "batch_size=True must be an integer >= 1"),
        ({"batch_size": 2.0}, "batch_size=2.0 must be an integer >= 1"),
        ({"workers": -1}, "workers=-1 must be an integer >= 0"),
        ({"batch_size": 2**31}, "batch_size=2147483648 must be an integer <= 2147483647"),
        ({"batch_size": "1" + "0" * 23}, f"batch_size='1{'0' * 23}' must be an integer <= 2147483647"),
        ({"fast": "maybe"}, "fast='maybe' must be true or false"),
        ({"fast": 2}, "fast=2 must be true or false"),
        ({"share": "half"}, "share='half' must be a number"),
        ({"share": "nan"}, "share='nan' must be a number"),
        ({"mode": "sample"}, "mode='sample' must be one of greedy, beam"),
        ({"revision": 1234}, "revision=1234 must be a string (quote a number to pass it as text)"),
        ({"path": "  "}, "path='  ' must be a non-empty string"),
    ],
)
def test_a_wrong_value_names_the_backend_the_argument_and_what_was_expected(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendArgumentError) as caught:
        _structure(**raw)
    assert str(caught.value) == f"toy backend: {message}"


def test_every_wrong_value_is_one_line() -> None:
    with pytest.raises(BackendArgumentError) as caught:
        _structure(batch_size=0, fast="maybe")
    assert str(caught.value).splitlines() == [
        "toy backend: batch_size=0 must be an integer >= 1",
        "toy backend: fast='maybe' must be true or false",
    ]


def test_unknown_arguments_list_the_accepted_ones() -> None:
    with pytest.raises(BackendArgumentError) as caught:
        _structure(batchsize=4, speed=1)
    assert str(caught.value) == (
        "toy backend: unknown argument(s) 'batchsize', 'speed'; "
        "accepted arguments are path, batch_size, workers, fast, share, mode, revision"
    )


def test_a_missing_argument_says_how_to_give_it() -> None:
    with pytest.raises(BackendArgumentError) as caught:
        structure_arguments({}, _Args, "toy", hints={"path": "pass path=<a folder>"})
    assert str(caught.value) == "toy backend: missing argument 'path'; pass path=<a folder>"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": 2**63}, "seed (--seed): expected an integer in [0, 2^63), got 9223372036854775808"),
        ({"seed": -1}, "seed (--seed): expected an integer in [0, 2^63), got -1"),
        ({"limit": 0}, "limit (--limit): expected an integer in [1, 2^63), got 0"),
        ({"batch_size": 10**12}, "batch_size (--batch_size): expected an integer in [1, 2147483648)"),
        ({"num_workers": -1}, "num_workers (--num_workers): expected an integer in [0, 2147483648)"),
    ],
)
def test_evaluate_checks_numeric_settings_before_anything_runs(settings: dict[str, int], message: str) -> None:
    # No spec, model or data is looked at: the benchmark does not even exist.
    with pytest.raises(SettingError) as error:
        evaluate("toy[path=m]", "no-such-benchmark", output_dir=None, cache_dir=None, **settings)
    assert str(error.value).startswith(message)
