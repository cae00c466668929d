"""Which device a backend may run on: checked before the model loads, so ``--device mps`` on a machine
without it is one error naming the argument, not a framework's traceback from deep inside a model's ``.to``.

Duck-typed over the ``torch`` module the backend hands in, so mill-core needs no ML framework to state it.
"""

from __future__ import annotations

from typing import Any

from mill.core.errors import BackendArgumentError

#: Device types that every machine has.
_ALWAYS = ("cpu", "meta")


def checked_device(name: str, who: str, torch: Any) -> Any:
    """``torch.device(name)``, when this machine has that device; ``who`` begins the message (``clip backend``).

    Raises:
        BackendArgumentError: ``name`` is no device, or names an accelerator (or an index of one) that this
            machine lacks, saying which device it does have.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise BackendArgumentError(f"{who}: device={name!r} is not a torch device: {error}") from None
    if device.type in _ALWAYS:
        return device
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None or accelerator.type != device.type:
        here = f"its accelerator is {accelerator.type}" if accelerator is not None else "it has no accelerator"
        use = accelerator.type if accelerator is not None else "cpu"
        raise BackendArgumentError(
            f"{who}: device={name!r} is not available on this machine ({here}); use device={use} (--device {use})"
        )
    count = int(torch.accelerator.device_count())
    if device.index is not None and device.index >= count:
        raise BackendArgumentError(
            f"{who}: device={name!r} but this machine has {count} {device.type} device(s) (indices 0 to {count - 1})"
        )
    return device
