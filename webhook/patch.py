"""The JSON patch between the original and the mutated pod (`jsonpatch.make_patch`).

make_patch compares every leaf of both documents; on a realistic 15 KB pod that took
~8 ms, mostly re-comparing containers the injector never touched. The injector shares
untouched sub-objects between input and output, so before diffing we drop dict entries
that are the very same object on both sides, and stand in a unique token string for every
object or array that is a list element or exists on one side only (the same object gets
the same token on both sides). The pruned documents differ exactly where the real ones
do, with list positions unchanged; tokens that make_patch copies into an op's value are
then swapped back for the objects they stand for.
"""

import secrets
from typing import Any

import jsonpatch


def make_patch(original: Any, mutated: Any) -> list[dict[str, Any]]:
    tokens = _Tokens()
    src, dst = _prune(original, mutated, tokens)
    ops = jsonpatch.make_patch(src, dst).patch
    for op in ops:
        if "value" in op:
            op["value"] = _restore(op["value"], tokens.by_token)
    return ops


# Random per process, so no pod can contain a token by accident or design.
_SALT = secrets.token_hex(16)


class _Tokens:
    def __init__(self) -> None:
        self.by_token: dict[str, Any] = {}
        self._by_id: dict[int, str] = {}

    def stand_in(self, value: Any) -> Any:
        """A token for a JSON object or array (scalars stay as they are)."""
        if not isinstance(value, dict | list):
            return value
        token = self._by_id.get(id(value))
        if token is None:
            token = f"\x00oomdump-object-{_SALT}-{len(self.by_token)}"
            self._by_id[id(value)] = token
            self.by_token[token] = value
        return token


def _prune(src: Any, dst: Any, tokens: _Tokens) -> tuple[Any, Any]:
    if isinstance(src, dict) and isinstance(dst, dict):
        pruned_src: dict[str, Any] = {}
        pruned_dst: dict[str, Any] = {}
        for key, value in src.items():
            if key not in dst:
                pruned_src[key] = tokens.stand_in(value)
            elif value is not dst[key]:
                pruned_src[key], pruned_dst[key] = _prune(value, dst[key], tokens)
        for key, value in dst.items():
            if key not in src:
                pruned_dst[key] = tokens.stand_in(value)
        return pruned_src, pruned_dst
    if isinstance(src, list) and isinstance(dst, list):
        return [tokens.stand_in(item) for item in src], [tokens.stand_in(item) for item in dst]
    return src, dst


def _restore(value: Any, tokens: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return tokens.get(value, value)
    if isinstance(value, list):
        return [_restore(item, tokens) for item in value]
    if isinstance(value, dict):
        return {key: _restore(item, tokens) for key, item in value.items()}
    return value
