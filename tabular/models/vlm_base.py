"""The base checkpoint of the fine-tuned vision-language members, loaded once per process and lent out.

A `best-gpu` run fine-tunes `vlm_lora` 16 times per seed (5 + 10 nested fits and the final refit) and predicts
after each fit; loading the ~9 GB base checkpoint for every one of them costs minutes of the run. So the base
model loads once per process, keyed by checkpoint folder, dtype, device and quantisation (`borrowed`), and is
lent to one fit or prediction at a time. The borrower puts its LoRA adapter on it (peft injects the adapter into
the base's own modules) and takes it off again with peft's `unload()` (which puts the original layers back,
unmerged) before the lease ends.

When a lease ends the lender puts back what training sets around the weights — activation checkpointing off,
train/eval flags and `requires_grad` as lent, hooks and `forward` overrides added to any module removed (peft
and trl hook the input embeddings, accelerate wraps `forward` in autocast), config and generation-config values
set during the lease (trl turns `use_cache` off and sets the pad token) reset — and then checks that it got back
the model it lent: the same module classes under the same names, every parameter and buffer the same storage,
dtype and device, written to by nobody (torch's in-place version counter), and all of the above as lent. A model
that comes back otherwise (an adapter left on, weights touched) is dropped with a warning and never lent again:
the next borrower loads a fresh one. So a cached model gives exactly what a fresh load gives
(tests/test_vlm_members.py compares the two).

One model is kept at a time (a lease of another checkpoint replaces it): two members with different bases never
hold two on the GPU. A borrower that asks while the model is lent (nested or concurrent use) gets a private,
freshly loaded copy that is not kept.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field

from featurestore.devices import pick_device

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What a lent model must look like when it comes back (see the module docstring)."""

    modules: dict[str, tuple]       # name -> (class, ids of its hooks per kind, forward overridden)
    tensors: dict[str, tuple]       # parameter/buffer name -> (data pointer, dtype, device, version)
    requires_grad: dict[str, bool]  # parameter name -> flag
    training: dict[str, bool]       # module name -> flag
    config: dict                    # the config, as a dict
    generation: dict | None         # the generation config, as a dict

    @classmethod
    def of(cls, model) -> "Snapshot":
        modules, training = {}, {}
        for name, module in model.named_modules():
            hooks = tuple(frozenset(getattr(module, kind, {})) for kind in HOOKS)
            modules[name] = (type(module), hooks, "forward" in module.__dict__)
            training[name] = module.training
        tensors = {f"p:{n}": _identity(t) for n, t in model.named_parameters()}
        tensors.update({f"b:{n}": _identity(t) for n, t in model.named_buffers()})
        generation = getattr(model, "generation_config", None)
        return cls(modules, tensors, {n: p.requires_grad for n, p in model.named_parameters()}, training,
                   model.config.to_dict(), generation.to_dict() if generation is not None else None)

    def differences(self, other: "Snapshot") -> list[str]:
        """What differs, in words (empty: the same model in the same state)."""
        out = []
        for what, mine, theirs in (("module", self.modules, other.modules), ("tensor", self.tensors, other.tensors)):
            changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if changed:
                out.append(f"{len(changed)} {what}(s) differ, e.g. {changed[0]!r}")
        if _json(self.config) != _json(other.config) or _json(self.generation) != _json(other.generation):
            out.append("its config changed")
        if self.requires_grad != other.requires_grad or self.training != other.training:
            out.append("its requires_grad or train/eval flags were not restored")
        return out


def _identity(tensor) -> tuple:
    try:
        version = tensor._version
    except RuntimeError:  # an inference tensor keeps no version counter
        version = None
    return tensor.data_ptr(), tensor.dtype, tensor.device, version


#: a module's hook tables (each keyed by hook id; the `_with_kwargs` / `_always_called` tables share the ids)
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_SIDE_TABLES = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _restore_config(config, before: dict) -> None:
    """Set back the values of `config` (a transformers config object) that differ from `before` (its
    `to_dict()` when lent), sub-configs included; a value added during the lease is removed."""
    now = config.to_dict()
    for key in now.keys() | before.keys():
        if _json(now.get(key)) == _json(before.get(key)):
            continue
        inner = getattr(config, key, None)
        if hasattr(inner, "to_dict") and isinstance(before.get(key), dict):
            _restore_config(inner, before[key])
        elif key in before:
            setattr(config, key, before[key])
        else:
            with contextlib.suppress(AttributeError):
                delattr(config, key)


@dataclass
class _Entry:
    key: tuple
    model: object
    processor: object
    folder: object
    snapshot: Snapshot
    lent: bool = False


@dataclass
class BaseModels:
    """The process's cache (`BASE_MODELS`); `loads` counts the checkpoints it loaded (tests, benchmarks)."""

    loads: int = 0
    _entry: _Entry | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def borrowed(self, member: str, model: str, path: str, dtype: str, device: str, load_in_4bit: bool = False):
        """(model, processor, folder) of the base checkpoint, lent for the `with` block (module docstring)."""
        from .vlm_finetune import model_folder

        folder = model_folder(member, model, path)
        dev = pick_device(device)
        # a CPU computes in float32 whatever `dtype` says (`featurestore.extractors.vlm.load_model`)
        key = (str(folder.resolve()), "float32" if dev.type == "cpu" else dtype, str(dev), bool(load_in_4bit))
        with self._lock:
            kept = self._entry
            if kept is not None and kept.key == key and not kept.lent:
                entry = kept
            else:
                if kept is not None and not kept.lent:
                    self._drop()  # another checkpoint: one model at a time
                loaded, processor = self._load(member, model, path, dtype, device, load_in_4bit)
                entry = _Entry(key, loaded, processor, folder, Snapshot.of(loaded))
                if self._entry is None:  # else the kept one is lent: this copy is private, not kept
                    self._entry = entry
            entry.lent = True
        try:
            yield entry.model, entry.processor, entry.folder
        finally:
            with self._lock:
                entry.lent = False
                if entry is self._entry:
                    problems = self._take_back(entry)
                    if problems:
                        log.warning("%s: the base model %s came back changed (%s); it is dropped and loads again "
                                    "for the next fit or prediction", member, model, "; ".join(problems))
                        self._drop()

    def _load(self, member, model, path, dtype, device, load_in_4bit):
        from .vlm_finetune import load_base

        loaded, processor, _ = load_base(member, model, path, dtype, device, load_in_4bit=load_in_4bit)
        self.loads += 1
        return loaded, processor

    @staticmethod
    def _take_back(entry: _Entry) -> list[str]:
        """Put back what training sets around the weights, then say what still differs from the model lent
        (module docstring)."""
        model, before = entry.model, entry.snapshot
        if getattr(model, "is_activation_checkpointing", False):
            model.activation_checkpointing_disable()
        for name, module in model.named_modules():
            lent = before.modules.get(name)
            if lent is None:
                continue  # a module added (an adapter layer left on): the check below reports it
            for kind, ids in zip(HOOKS, lent[1]):
                for hook in set(getattr(module, kind, {})) - ids:
                    getattr(module, kind).pop(hook)
                    for table in _HOOK_SIDE_TABLES:
                        getattr(module, table, {}).pop(hook, None)
            if "forward" in module.__dict__ and not lent[2]:
                del module.__dict__["forward"]
            module.training = before.training[name]
        for name, parameter in model.named_parameters():
            if name in before.requires_grad:
                parameter.requires_grad_(before.requires_grad[name])
        _restore_config(model.config, before.config)
        if before.generation is not None:
            _restore_config(model.generation_config, before.generation)
        entry.processor.tokenizer.padding_side = "left"
        return before.differences(Snapshot.of(model))

    def _drop(self) -> None:
        from .vlm_finetune import free_memory

        self._entry = None
        free_memory()

    def clear(self) -> None:
        """Forget the kept model, unless it is lent now (its memory goes back to the GPU)."""
        with self._lock:
            if self._entry is not None and not self._entry.lent:
                self._drop()


BASE_MODELS = BaseModels()
borrowed = BASE_MODELS.borrowed
