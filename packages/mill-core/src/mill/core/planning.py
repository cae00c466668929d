"""Planning an evaluation: every model × benchmark pair validated before anything runs.

A :class:`PlannedRun` settles which variant a model gets (the requested one, or the first it can serve), checks
the model's label space against the benchmark's, and names the backend plugin that will load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from attrs import field, frozen

from mill.core.backend import Backend, BackendPlugin, Capabilities, RunContext
from mill.core.environment import DEFAULT_CHUNK_SIZE
from mill.core.errors import BackendArgumentError, CapabilityError
from mill.core.model_spec import ModelSpec, parse_model_spec
from mill.core.plugins import LoadedPlugin, ResolvedModel, load_plugin, resolve_model
from mill.core.registry import SpecRegistry
from mill.core.sample import OnBadSample, ReadOptions
from mill.core.spec import Spec
from mill.core.task_kind import TaskKind, Variant, get_kind, installed_kinds


@frozen
class PlannedRun:
    """One model × benchmark pair, validated: the variant to run and its kind are settled."""

    model: ResolvedModel
    plugin: LoadedPlugin
    spec: Spec
    variant_name: str
    variant: Variant
    kind: TaskKind
    #: Whether this is the variant the model gets by default (the first it can serve): only that one's
    #: headline metric becomes the benchmark's rollup row, so another rendering (a letter-likelihood
    #: variant next to a generative one) never stands in for it.
    rolls_up: bool = True


@frozen
class RunOptions:
    """Settings that apply to every run of one evaluation. ``output_dir`` None keeps nothing on disk:
    no results, no committed chunks, no lock (a training loop's evaluation)."""

    output_dir: Path | None
    cache_dir: Path | None
    seed: int | None = None
    limit: int | None = None
    data_dirs: Mapping[str, str] = field(factory=dict)
    default_data_dir: str | None = None
    allow_incomplete: bool = False
    command_line: str = ""
    on_bad_sample: OnBadSample = "fail"
    overwrite: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            limit=self.limit,
            allow_incomplete=self.allow_incomplete,
            cache_dir=self.cache_dir,
            on_bad_sample=self.on_bad_sample,
        )


def pick_variant(spec: Spec, requested: str | None, capabilities: Capabilities, model_text: str) -> str:
    """The requested variant, or the first the model can serve in declaration order.

    Raises:
        CapabilityError: saying what each variant needs and what the model serves.
    """
    candidates = [requested] if requested else list(spec.variants)
    for name in candidates:
        if capabilities.serves(spec.variants[name].kind):
            return name
    needs = "; ".join(f"{name} needs {v.kind}" for name, v in spec.variants.items() if name in candidates)
    served = ", ".join(sorted(capabilities.kinds)) or "nothing"
    inputs = ", ".join(sorted(capabilities.modalities))
    problem = f"model {model_text!r} serves {served} (inputs: {inputs}), but {needs}"
    # A variant of the same benchmark that the model can serve (a hosted model asked for letter likelihood).
    instead = [name for name, v in spec.variants.items() if capabilities.serves(v.kind)]
    alternative = f"; it can be evaluated on {' or '.join(instead)} instead" if instead else ""
    raise CapabilityError(
        f"{problem}{alternative}. Use a CLIP model (clip[...]) for zero_shot and retrieval variants, a supervised "
        "classifier (timm, torchvision, hf_classifier) for classification variants and a vision-language model (hf, "
        "vllm, or openai for a served one) for multiple-choice variants (generative_mcq, likelihood_mcq)."
    )


def check_label_space(spec: Spec, capabilities: Capabilities, model_text: str) -> None:
    """Refuse a classifier whose head scores another number of classes than ``spec``'s classifiers must.

    Raises:
        CapabilityError: naming both counts.
    """
    n_outputs = capabilities.n_outputs
    if n_outputs is None or n_outputs == spec.n_outputs:
        return
    raise CapabilityError(
        f"model {model_text!r} scores {n_outputs} classes, but {spec.name} is scored over {spec.n_outputs} "
        f"(its classes{' and their parent list' if spec.parent_count is not None else ''}); a classifier "
        "trained on another label space cannot be evaluated on it: use a model with a matching head"
    )


ModelRef = str | BackendPlugin | Backend
"""What names a model: a model-spec string (or TOML model file), a plugin object (such as an in-memory
model's, which builds its backend when the run starts), or an already loaded backend."""


@frozen
class _Preloaded:
    """A plugin for a backend object loaded by the caller: it serves the kinds whose protocols it implements."""

    backend: Backend

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        del args
        kinds = {name for name, kind in installed_kinds().items() if isinstance(self.backend, kind.backend_protocol)}
        return Capabilities(kinds=frozenset(kinds))

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        del args, context
        return self.backend


def resolve_model_ref(model: ModelRef) -> tuple[ResolvedModel, LoadedPlugin]:
    """The backend that serves ``model`` and the arguments it gets.

    Raises:
        UnknownBackendError, ModelSpecError: for a model-spec string that names no installed backend.
    """
    if isinstance(model, str):
        resolved = resolve_model(parse_model_spec(model))
        return resolved, load_plugin(resolved.backend)
    plugin: BackendPlugin = model if isinstance(model, BackendPlugin) else _Preloaded(model)
    name = str(getattr(model, "name", type(model).__name__))
    distribution = getattr(model, "distribution", None)
    resolved = ResolvedModel(name, {}, ModelSpec(head=name, text=name))
    return resolved, LoadedPlugin(name, plugin, distribution if isinstance(distribution, str) else None)


def plan_runs(models: Sequence[ModelRef], benchmarks: Sequence[str], registry: SpecRegistry) -> list[PlannedRun]:
    """Validate every pair before anything runs; the first invalid pair raises."""
    selections = [registry.select(benchmark) for benchmark in benchmarks]
    planned = []
    for model_ref in models:
        model, plugin = resolve_model_ref(model_ref)
        capabilities = plugin.plugin.capabilities(model.args)
        for selection in selections:
            name = pick_variant(selection.spec, selection.variant, capabilities, model.spec.text)
            check_label_space(selection.spec, capabilities, model.spec.text)
            variant = selection.spec.variants[name]
            default = pick_variant(selection.spec, None, capabilities, model.spec.text)
            kind = get_kind(variant.kind)
            planned.append(PlannedRun(model, plugin, selection.spec, name, variant, kind, rolls_up=name == default))
    return planned


def load_backend(run: PlannedRun, context: RunContext) -> Backend:
    """Load ``run``'s model and check it implements what its kind asks of a backend.

    Raises:
        BackendArgumentError: naming the plugin whose loaded backend fails the kind's protocol.
    """
    backend: Backend = run.plugin.plugin.load(run.model.args, context)
    protocol = run.kind.backend_protocol
    if not isinstance(backend, protocol):
        raise BackendArgumentError(
            f"backend {run.plugin.name!r} (from {run.plugin.distribution or 'an unknown distribution'}) declares "
            f"that it serves {run.kind.name}, but its loaded model does not implement {protocol.__name__}; "
            "see docs/backends.md for the methods each task kind needs"
        )
    return cast(Backend, backend)  # isinstance against a protocol object narrows to Any
