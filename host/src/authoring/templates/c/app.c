/* `{{name}}`'s hooks: the gateway's side of the rules in policy.c. The bindings (gen/plugin.h) are written by
   `weir plugin build`. Who frees what: what the host passes in (the config, a chunk, a summary) is ours to free;
   what we return (a message, replacement texts) must be heap copies, which the bindings free after the call; the
   borrowed request handle is dropped before `on-request` returns. */
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "policy.h"

static policy_config config;

static plugin_string_t heap_string(const char *text, size_t len) {
    plugin_string_t s = {malloc(len ? len : 1), len};
    memcpy(s.ptr, text, len);
    return s;
}

void exports_weir_plugin_hooks_manifest(exports_weir_plugin_hooks_plugin_manifest_t *ret) {
    ret->hooks = EXPORTS_WEIR_PLUGIN_HOOKS_OPTIONAL_HOOKS_ON_CHUNK;
    /* It keeps nothing of a request: any instance may serve any request. */
    ret->reuse = EXPORTS_WEIR_PLUGIN_HOOKS_REUSE_ALWAYS;
}

bool exports_weir_plugin_hooks_init(plugin_string_t *json, exports_weir_plugin_hooks_plugin_error_t *err) {
    policy_free(&config);
    const char *problem = policy_parse((const char *)json->ptr, json->len, &config);
    plugin_string_free(json);
    if (problem) {
        err->message = heap_string(problem, strlen(problem));
        return false;
    }
    return true;
}

bool exports_weir_plugin_hooks_on_request(exports_weir_plugin_hooks_borrow_request_t req,
                                          exports_weir_plugin_hooks_request_decision_t *ret,
                                          exports_weir_plugin_hooks_plugin_error_t *err) {
    (void)err;
    plugin_string_t name = {(uint8_t *)config.header, strlen(config.header)}, value;
    bool has = weir_plugin_types_method_request_header(req, &name, &value);
    if (has) plugin_string_free(&value);
    /* The request is lent for this call: its handle must be given back before returning. */
    weir_plugin_types_request_drop_borrow(req);
    char *msg = policy_refusal(&config, has);
    if (!msg) {
        ret->tag = WEIR_PLUGIN_TYPES_REQUEST_DECISION_CONTINUE;
        return true;
    }
    ret->tag = WEIR_PLUGIN_TYPES_REQUEST_DECISION_REJECT;
    ret->val.reject.status = 403;
    ret->val.reject.message = (plugin_string_t){(uint8_t *)msg, strlen(msg)};
    ret->val.reject.headers = (weir_plugin_types_list_header_t){NULL, 0};
    return true;
}

bool exports_weir_plugin_hooks_on_chunk(exports_weir_plugin_hooks_chunk_t *chunk,
                                        exports_weir_plugin_hooks_chunk_decision_t *ret,
                                        exports_weir_plugin_hooks_plugin_error_t *err) {
    (void)err;
    size_t n = chunk->texts.len;
    plugin_string_t *texts = n ? calloc(n, sizeof *texts) : NULL;
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        plugin_string_t *t = &chunk->texts.ptr[i].text;
        size_t len = 0;
        char *out = policy_rewrite(&config, (const char *)t->ptr, t->len, &len);
        if (out) {
            texts[i] = (plugin_string_t){(uint8_t *)out, len};
            changed = true;
        } else {
            texts[i] = heap_string((const char *)t->ptr, t->len);
        }
    }
    exports_weir_plugin_hooks_chunk_free(chunk);
    if (!changed) {
        plugin_list_string_t all = {texts, n};
        plugin_list_string_free(&all);
        ret->tag = WEIR_PLUGIN_TYPES_CHUNK_DECISION_PASS;
        return true;
    }
    ret->tag = WEIR_PLUGIN_TYPES_CHUNK_DECISION_REPLACE_TEXTS;
    ret->val.replace_texts = (plugin_list_string_t){texts, n};
    return true;
}

bool exports_weir_plugin_hooks_flush(exports_weir_plugin_hooks_text_stream_t *stream, plugin_option_string_t *ret,
                                     exports_weir_plugin_hooks_plugin_error_t *err) {
    (void)stream;
    (void)err;
    ret->is_some = false; /* it never holds text */
    return true;
}

void exports_weir_plugin_hooks_on_complete(exports_weir_plugin_hooks_summary_t *summary) {
    exports_weir_plugin_hooks_summary_free(summary);
}
