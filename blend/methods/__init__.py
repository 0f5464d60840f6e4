"""Blend methods: one module each, registered with `@METHODS.register("<name>", priority=N)`.

A method is a function `weights(P, y, *, cap, random_state, <its own parameters with defaults>) -> weights`
(rows x models out-of-fold predictions on the target's scale -> weights in [0, cap] summing to 1).
Its own keyword parameters are its configuration: `BoundedBlender` hands each method the
`[tabular.blend]` keys it names, and `blend.config` accepts exactly the keys some method names, so a
new method or a new parameter is this one module. `priority` (lower = simpler) orders the methods and
breaks `auto` ties toward the simpler one.
"""
from __future__ import annotations

from featurestore.registry import Registry

METHODS = Registry("blend method", package=__name__)
