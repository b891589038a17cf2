/* The rules of `{{name}}`, in plain C (no gateway needed): `test_policy.c` tests them, `app.c` connects them to the
   gateway's hooks. Every string these functions return is malloc'd: the caller frees it. */
#ifndef POLICY_H
#define POLICY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *from;
    char *to;
} policy_word;

typedef struct {
    char *header;         /* requests without this header are refused */
    policy_word *words;   /* replaced in answers, in order of `from` */
    size_t n_words;
} policy_config;

/* Reads the plugin's config (JSON: {"header": "...", "replace": {"word": "replacement", ...}}) into `out`. Returns
   NULL, or what is wrong with it (a static message). */
const char *policy_parse(const char *json, size_t len, policy_config *out);

/* The refusal message for a request that has (or not) the configured header, or NULL when it is allowed. */
char *policy_refusal(const policy_config *c, bool has_header);

/* `text` with the configured words replaced (a word split across two streamed events is not matched), or NULL when
   nothing changes. Its length goes to `out_len`. */
char *policy_rewrite(const policy_config *c, const char *text, size_t len, size_t *out_len);

void policy_free(policy_config *c);

#endif
