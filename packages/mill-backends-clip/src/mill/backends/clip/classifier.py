"""The zero-shot classifier: one L2-normalised, prompt-averaged text embedding per class.

Computed as clip_benchmark's ``zero_shot_classifier`` computes it, but with every class x template
prompt encoded in large batches instead of one class at a time, and cached on disk under a key
that names everything the weights depend on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from attrs import frozen
from open_clip.model import CLIP, text_global_pool

from mill.core.cachefile import cache_lock, write_cache
from mill.core.errors import NonFiniteError, SpecError

log = logging.getLogger(__name__)


def classifier_cache_key(fields: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``fields`` (architecture, weights, precision, prompts, versions)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompts_for(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every class x template prompt, class-major. Raises SpecError for a template without ``{c}``."""
    for template in templates:
        if "{c}" not in template:
            raise SpecError(
                f"zero-shot template {template!r} has no {{c}} placeholder for the class name; "
                "fix the benchmark spec's templates"
            )
    return [template.replace("{c}", name) for name in classnames for template in templates]


def build_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    text_batch_size: int,
) -> torch.Tensor:
    """The classifier, float32 ``[embed_dim, n_classes]`` on ``device``.

    Per class: normalise each prompt embedding, average over templates, normalise the mean.
    ``autocast`` makes a fresh autocast context (or a null one) for each text batch.
    """
    prompts = prompts_for(classnames, templates)
    embeddings = []
    with torch.inference_mode():
        for start in range(0, len(prompts), text_batch_size):
            tokens = tokenizer(prompts[start : start + text_batch_size]).to(device)
            with autocast():
                encoded = encode_text(model, tokens)
            embeddings.append(F.normalize(encoded.float(), dim=-1))
        per_prompt = torch.cat(embeddings).view(len(classnames), len(templates), -1)
        per_class = F.normalize(per_prompt.mean(dim=1), dim=-1)
    return per_class.T.contiguous()


def encode_text(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed over the tokens up to the longest prompt's end only.

    The tokenizer pads every prompt to the full context (77 tokens) although ImageNet prompts need about
    20, so most of the work is on padding. Dropping the trailing columns that are padding in every row
    leaves the result unchanged exactly when (a) attention is causal, so no kept position sees a dropped
    one, and (b) the embedding is pooled at the end-of-text token (``argmax``), which is kept. Every
    operation in between is per position. Only open_clip's own ``CLIP.encode_text``, which this mirrors,
    is shortcut; any other model (or a replaced ``encode_text``) is called as it is.
    tests/test_classifier.py checks that the classifier does not change.
    """
    # open_clip ships no types: what its model and text_global_pool return is named with its type here.
    if not _trims_padding(model):
        encoded: torch.Tensor = model.encode_text(tokens)
        return encoded
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else tokens.shape[1]
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    pooled: torch.Tensor = text_global_pool(x, tokens, model.text_pool_type)
    projection = model.text_projection
    if projection is None:
        return pooled
    if isinstance(projection, torch.nn.Linear):
        projected: torch.Tensor = projection(pooled)
        return projected
    return torch.matmul(pooled, projection)


def _trims_padding(model: Any) -> bool:
    mask = getattr(model, "attn_mask", None)
    return (
        type(model) is CLIP
        and "encode_text" not in vars(model)
        and getattr(model, "text_pool_type", None) == "argmax"
        # causal, exactly as open_clip builds it: -inf above the diagonal, 0 on and below it
        and isinstance(mask, torch.Tensor)
        and torch.equal(mask, torch.full_like(mask, -torch.inf).triu(1))
    )


#: Bumped when the layout of a cached classifier file changes; other layouts are rebuilt, never misread.
CACHE_FORMAT = 2


def non_finite_classes(classifier: torch.Tensor, classnames: Sequence[str]) -> list[str]:
    """The classes whose classifier column holds a NaN or an infinity (a float16 overflow in the text tower)."""
    bad = (~torch.isfinite(classifier).all(dim=0)).nonzero().flatten().tolist()
    return [classnames[i] for i in bad]


def check_finite(classifier: torch.Tensor, classnames: Sequence[str], *, precision: str) -> None:
    """Raise NonFiniteError naming the classes whose embedding is not finite: every image's score against
    them would be NaN, and the accuracy silently wrong."""
    bad = non_finite_classes(classifier, classnames)
    if bad:
        shown = ", ".join(repr(name) for name in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise NonFiniteError(
            f"the zero-shot classifier has non-finite (NaN or inf) text embeddings for {len(bad)} of "
            f"{len(classnames)} classes: {shown}; the text tower overflows at precision={precision}: "
            "run with precision=fp32 (or amp_bf16)"
        )


@frozen
class ClassifierStore:
    """Classifiers on disk, one ``{key}.pt`` per cache key under ``directory``.

    Each file holds the tensor with the sha256 of its bytes, so a file damaged on disk (a bit flipped, a
    partial copy) is detected and rebuilt rather than trusted. A cache that cannot be written (a full disk,
    no permission) only costs a warning: the classifier is used uncached.
    """

    directory: Path

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load_or_build(
        self, key: str, build: Callable[[], torch.Tensor], *, n_classes: int, device: torch.device
    ) -> tuple[torch.Tensor, bool]:
        """The cached classifier for ``key`` and True, or ``build()``'s, stored, and False.

        Concurrent runs with the same key build it once: the second waits on the lock and loads.
        ``build`` may raise (a non-finite classifier): nothing is cached then.
        """
        path = self.path_for(key)
        cached = self._load(path, n_classes, device)
        if cached is not None:
            return cached, True
        with cache_lock(path):
            cached = self._load(path, n_classes, device)
            if cached is not None:
                return cached, True
            classifier = build()
            payload = _serialise(classifier)
            write_cache(path, lambda tmp: tmp.write_bytes(payload))
        return classifier, False

    @staticmethod
    def _load(path: Path, n_classes: int, device: torch.device) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged cache entry is rebuilt, never trusted
            log.warning("classifier cache %s is unreadable (%s); rebuilding it", path, error)
            return None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            log.warning("classifier cache %s was written by another version of Mill; rebuilding it", path)
            return None
        tensor = entry.get("classifier")
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or tensor.shape[1] != n_classes:
            log.warning("classifier cache %s is not a [dim, %d] tensor; rebuilding it", path, n_classes)
            return None
        if entry.get("sha256") != _tensor_sha256(tensor):
            log.warning("classifier cache %s does not match its checksum (damaged on disk); rebuilding it", path)
            return None
        if not torch.isfinite(tensor).all():
            # A non-finite classifier is never written, so this one was damaged after it was.
            log.warning("classifier cache %s holds non-finite values; rebuilding it", path)
            return None
        return tensor.to(device)


def _serialise(classifier: torch.Tensor) -> bytes:
    # Serialised in memory so that a failing disk write surfaces as the OSError write_cache expects.
    cpu = classifier.detach().cpu().contiguous()
    buffer = io.BytesIO()
    torch.save({"format": CACHE_FORMAT, "classifier": cpu, "sha256": _tensor_sha256(cpu)}, buffer)
    return buffer.getvalue()


def _tensor_sha256(tensor: torch.Tensor) -> str:
    raw = tensor.detach().cpu().contiguous().view(torch.uint8)  # any dtype's bytes, bfloat16 included
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()
