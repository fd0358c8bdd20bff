"""Rows against their dataset type: what a `chat_template`, `completion` or `alpaca` row must hold, the
roles axolotl maps, and the keys a row and its prompt are compared by (duplicates, leakage)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.checks.dataset import DataSet
from pipeline.core.errors import Finding

#: axolotl's chat_template roles when the entry maps none (prompt_strategies/chat_template.py)
DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                 "system": "system", "tool": "tool"}
CHECKED_TYPES = ("chat_template", "completion", "alpaca")


def setting(entry: Mapping[str, Any], key: str, default: str) -> str:
    """A dataset entry's name of a field; one that is not a string reads as unset (axolotl's validation
    reports it), so a row is never looked up by a list or a number."""
    value = entry.get(key)
    return value if isinstance(value, str) and value else default


def _mapping(entry: Mapping[str, Any]) -> tuple[str, str]:
    props = entry.get("message_property_mappings")
    props = props if isinstance(props, dict) else {}
    role = setting(props, "role", setting(entry, "message_field_role", "role"))
    content = setting(props, "content", setting(entry, "message_field_content", "content"))
    return role, content


def _roles(entry: Mapping[str, Any]) -> dict[str, str]:
    mapped = entry.get("roles")
    if isinstance(mapped, dict) and mapped:
        return {str(s): str(t) for t, sources in mapped.items()
                for s in (sources if isinstance(sources, list) else [sources] if isinstance(sources, str) else [])}
    return dict(DEFAULT_ROLES)


def _trained_roles(entry: Mapping[str, Any], roles: Mapping[str, str]) -> set[str]:
    wanted = entry.get("roles_to_train")
    wanted = wanted if isinstance(wanted, list) else [wanted] if isinstance(wanted, str) else ["assistant"]
    return {roles.get(str(r), str(r)) for r in wanted}


def messages(ds: DataSet, row: Any) -> list[dict[str, Any]] | None:
    """A chat row's messages as {'role', 'content'} with roles mapped, or None where the row is malformed."""
    if not isinstance(row, dict):
        return None
    msgs = row.get(setting(ds.entry, "field_messages", "messages"))
    if not isinstance(msgs, list):
        return None
    role_key, content_key = _mapping(ds.entry)
    roles = _roles(ds.entry)
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            return None
        out.append({"role": roles.get(str(m.get(role_key)), str(m.get(role_key))),
                    "content": m.get(content_key)})
    return out


def row_check(ds: DataSet, cfg: Mapping[str, Any]) -> tuple[RowCheck | None, list[Finding]]:
    """The check each row of `ds` gets, or None with the finding that says its rows are not checked."""
    if ds.type not in CHECKED_TYPES or cfg.get("rl"):
        what = f"an {cfg['rl']} preference set" if cfg.get("rl") else f"type {ds.entry.get('type')!r}"
        return None, [Finding(ds.shown, None, "data-type-unchecked",
                              f"{ds.label} is {what}: its rows are not checked (the check knows supervised "
                              f"{', '.join(CHECKED_TYPES)} rows)")]
    return {"chat_template": _chat_row, "completion": _completion_row, "alpaca": _alpaca_row}[ds.type], []


RowCheck = Callable[[DataSet, Any, Mapping[str, Any]], Iterable[tuple[str, str]]]


def _chat_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    field_messages = setting(ds.entry, "field_messages", "messages")
    if not isinstance(row, dict):
        yield "data-row", f"row is a {type(row).__name__}, not an object with a {field_messages!r} list"
        return
    msgs = row.get(field_messages)
    if not isinstance(msgs, list) or not msgs:
        found = "missing" if msgs is None else ("empty" if msgs == [] else f"a {type(msgs).__name__}")
        keys = ", ".join(sorted(map(str, row))) or "none"
        yield "data-row", (f"{field_messages!r} is {found} (keys: {keys}); a chat_template row needs a list of "
                           f"messages, or set field_messages to the key that holds them")
        return
    role_key, content_key = _mapping(ds.entry)
    roles = _roles(ds.entry)
    explicit = isinstance(ds.entry.get("roles"), dict) and bool(ds.entry.get("roles"))
    trained = _trained_roles(ds.entry, roles)
    train_all = bool(cfg.get("train_on_inputs"))
    flag = setting(ds.entry, "message_field_training", "")
    any_trained = malformed = False
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or role_key not in m or content_key not in m:
            yield "data-row", (f"message {i} is not an object with {role_key!r} and {content_key!r}; fix the row or "
                               f"set message_property_mappings")
            return
        role = str(m[role_key])
        # an entry's own `roles:` replaces the defaults, and axolotl passes a role it does not map through as
        # it is (prompt_strategies/chat_template.py); with the defaults, an unmapped role is a data mistake
        if role not in roles and not explicit:
            yield "data-role", (f"message {i} has role {role!r}, which axolotl does not know (known: "
                                f"{', '.join(sorted(roles))}): it passes it through unmapped, so the template renders "
                                f"it as {role!r} and it is never trained; rename it or map it with `roles:` in the "
                                f"dataset entry")
            continue
        content = m[content_key]
        if content is not None and not isinstance(content, (str, list)):
            yield "data-row", f"message {i} ({role}) has {type(content).__name__} content, not text; write it as a string"
            malformed = True  # the fix is that line's: "no trained turn" on top would only repeat it
            continue
        if content is None or (isinstance(content, str) and not content.strip()):
            yield "data-empty-content", f"message {i} ({role}) has empty content; fill it or drop the row"
        if train_all or roles.get(role, role) in trained or (flag and m.get(flag)):
            any_trained = True
    if not any_trained and not malformed:
        yield "data-no-trained-turn", (f"no message has a trained role ({', '.join(sorted(trained))}), so the row "
                                       f"adds no loss; add an assistant turn or set roles_to_train")


def _completion_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    key = setting(ds.entry, "field", "text")
    if not isinstance(row, dict) or not isinstance(row.get(key), str):
        yield "data-row", f"a completion row needs a string {key!r} field (or set `field:` in the dataset entry)"
    elif not row[key].strip():
        yield "data-empty-content", f"{key!r} is empty; fill it or drop the row"


def _alpaca_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("instruction", "output")):
        yield "data-row", "an alpaca row needs string 'instruction' and 'output' fields"
    elif not row["output"].strip():
        yield "data-empty-content", "'output' is empty, so the row adds no loss; fill it or drop the row"


# --- duplicates and leakage ---------------------------------------------------------------------------

def row_key(row: Any) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def prompt_key(ds: DataSet, row: Any) -> str | None:
    """What the model is asked (every untrained turn), so a test row with a new answer to a training
    prompt still counts as leaked."""
    if ds.type == "chat_template":
        msgs = messages(ds, row)
        if msgs is None:
            return None
        trained = _trained_roles(ds.entry, _roles(ds.entry))
        prompt = [(m["role"], m["content"]) for m in msgs if m["role"] not in trained]
        return json.dumps(prompt, ensure_ascii=False) if prompt else None
    if ds.type == "alpaca" and isinstance(row, dict):
        return json.dumps([row.get("instruction"), row.get("input")], ensure_ascii=False)
    return None


