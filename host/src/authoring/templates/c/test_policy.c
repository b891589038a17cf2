/* Unit tests of the rules (no gateway, no WebAssembly): cc -o test_policy test_policy.c policy.c && ./test_policy */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static policy_config parsed(const char *json) {
    policy_config c;
    const char *problem = policy_parse(json, strlen(json), &c);
    if (problem) {
        fprintf(stderr, "%s: %s\n", json, problem);
        exit(1);
    }
    return c;
}

int main(void) {
    policy_config c = parsed("{\"header\": \"x-team\", \"replace\": {\"mock\": \"MOCK\", \"caf\\u00e9\": \"tea\"}, \"n\": [1, {\"a\": null}]}");
    assert(strcmp(c.header, "x-team") == 0 && c.n_words == 2);

    /* A request without the header is refused, naming it; with it, allowed. */
    char *msg = policy_refusal(&c, false);
    assert(msg && strcmp(msg, "{{name}}: requests need the `x-team` header") == 0);
    free(msg);
    assert(policy_refusal(&c, true) == NULL);

    /* Answers have the configured words replaced; text without them is left alone. */
    size_t n = 0;
    const char *answer = "a mock answer, mock caf\xc3\xa9";
    char *out = policy_rewrite(&c, answer, strlen(answer), &n);
    assert(out && strcmp(out, "a MOCK answer, MOCK tea") == 0 && n == strlen(out));
    free(out);
    assert(policy_rewrite(&c, "nothing here", 12, &n) == NULL);
    policy_free(&c);

    /* A config the gateway must refuse at load. */
    policy_config bad;
    assert(policy_parse("{\"header\": \"\"}", 14, &bad) != NULL);
    policy_free(&bad);
    assert(policy_parse("{\"header\": \"x\", \"replace\": {\"\": \"y\"}}", 36, &bad) != NULL);
    policy_free(&bad);
    assert(policy_parse("not json", 8, &bad) != NULL);
    policy_free(&bad);

    puts("ok: 3 rules tested");
    return 0;
}
