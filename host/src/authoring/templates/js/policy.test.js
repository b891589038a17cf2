// Unit tests of `{{name}}`'s rules: `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { check, refusal, rewrite } from "./policy.js";

const config = { header: "x-team", replace: { mock: "MOCK" } };

test("refuses requests without the header", () => {
  assert.match(refusal(config, undefined), /x-team/);
  assert.equal(refusal(config, "search"), undefined);
});

test("replaces words in answers", () => {
  assert.equal(rewrite(config, " the Weir"), " the Weir");
  assert.equal(rewrite(config, " mock upstream"), " MOCK upstream");
});

test("an empty header name is refused", () => {
  assert.notEqual(check({ header: "" }), undefined);
  assert.equal(check(config), undefined);
});
