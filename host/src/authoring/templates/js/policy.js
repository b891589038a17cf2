// The rules of `{{name}}`, in plain JavaScript (no gateway needed): `policy.test.js` tests them, `app.js` connects
// them to the gateway's hooks.

// The config's problems (an error message), or undefined.
export function check(config) {
  if (!config.header || Object.keys(config.replace ?? {}).some((w) => !w)) {
    return "config: `header` and every word of `replace` must be non-empty";
  }
  return undefined;
}

// The refusal message for a request whose configured header has this value (undefined: absent), or undefined.
export function refusal(config, headerValue) {
  if (headerValue === undefined) return `{{name}}: requests need the \`${config.header}\` header`;
  return undefined;
}

// `text` with the configured words replaced (a word split across two streamed events is not matched).
export function rewrite(config, text) {
  for (const [word, replacement] of Object.entries(config.replace ?? {}).sort()) {
    text = text.split(word).join(replacement);
  }
  return text;
}
