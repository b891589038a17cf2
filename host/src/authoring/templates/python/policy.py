"""The rules of `{{name}}`, in plain Python (no gateway needed): `test_policy.py` tests them, `app.py` connects them
to the gateway's hooks."""


def check(config):
    """The config's problems (an error message), or None."""
    if not config.get("header") or any(not w for w in config.get("replace", {})):
        return "config: `header` and every word of `replace` must be non-empty"
    return None


def refusal(config, header_value):
    """The refusal message for a request whose configured header has this value (None: absent), or None."""
    if header_value is None:
        return f"{{name}}: requests need the `{config['header']}` header"
    return None


def rewrite(config, text):
    """`text` with the configured words replaced (a word split across two streamed events is not matched)."""
    for word, replacement in sorted(config.get("replace", {}).items()):
        text = text.replace(word, replacement)
    return text
