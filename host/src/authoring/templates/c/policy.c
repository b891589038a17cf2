/* The rules of `{{name}}`, and the little JSON reader its config needs (objects, strings with escapes; other values
   are skipped). */
#include "policy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_NAME "{{name}}"

typedef struct {
    const char *p;
    const char *end;
} reader;

static void skip_space(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static void put_utf8(char *out, size_t *n, uint32_t c) {
    if (c < 0x80) {
        out[(*n)++] = (char)c;
    } else if (c < 0x800) {
        out[(*n)++] = (char)(0xC0 | (c >> 6));
        out[(*n)++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (c >> 12));
        out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (c & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | (c >> 18));
        out[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (c & 0x3F));
    }
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* A JSON string at the reader (its opening quote), decoded and NUL-terminated; NULL when malformed. */
static char *read_string(reader *r) {
    if (r->p >= r->end || *r->p != '"') return NULL;
    r->p++;
    char *out = malloc((size_t)(r->end - r->p) + 1);
    size_t n = 0;
    if (!out) return NULL;
    while (r->p < r->end && *r->p != '"') {
        char c = *r->p++;
        if (c != '\\') {
            out[n++] = c;
            continue;
        }
        if (r->p >= r->end) break;
        char e = *r->p++;
        switch (e) {
            case '"': case '\\': case '/': out[n++] = e; break;
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case 'n': out[n++] = '\n'; break;
            case 'r': out[n++] = '\r'; break;
            case 't': out[n++] = '\t'; break;
            case 'u': {
                uint32_t c1;
                if (r->end - r->p < 4 || !hex4(r->p, &c1)) goto bad;
                r->p += 4;
                if (c1 >= 0xD800 && c1 < 0xDC00 && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                    uint32_t c2;
                    if (hex4(r->p + 2, &c2) && c2 >= 0xDC00 && c2 < 0xE000) {
                        r->p += 6;
                        c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
                    }
                }
                put_utf8(out, &n, c1);
                break;
            }
            default: goto bad;
        }
    }
    if (r->p >= r->end) goto bad;
    r->p++; /* the closing quote */
    out[n] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

/* Skips any JSON value; 0 when malformed. */
static int skip_value(reader *r) {
    skip_space(r);
    if (r->p >= r->end) return 0;
    if (*r->p == '"') {
        char *s = read_string(r);
        if (!s) return 0;
        free(s);
        return 1;
    }
    if (*r->p == '{' || *r->p == '[') {
        char close = *r->p == '{' ? '}' : ']';
        r->p++;
        skip_space(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return 1;
        }
        for (;;) {
            if (close == '}') {
                skip_space(r);
                char *k = read_string(r);
                if (!k) return 0;
                free(k);
                skip_space(r);
                if (r->p >= r->end || *r->p++ != ':') return 0;
            }
            if (!skip_value(r)) return 0;
            skip_space(r);
            if (r->p >= r->end) return 0;
            if (*r->p == ',') { r->p++; continue; }
            if (*r->p == close) { r->p++; return 1; }
            return 0;
        }
    }
    while (r->p < r->end && *r->p != ',' && *r->p != '}' && *r->p != ']' && *r->p != ' ' && *r->p != '\n') r->p++;
    return 1;
}

static int by_from(const void *a, const void *b) {
    return strcmp(((const policy_word *)a)->from, ((const policy_word *)b)->from);
}

/* The `replace` object: word → replacement. */
static const char *read_words(reader *r, policy_config *out) {
    skip_space(r);
    if (r->p >= r->end || *r->p++ != '{') return "config: `replace` must be a table of words";
    skip_space(r);
    if (r->p < r->end && *r->p == '}') { r->p++; return NULL; }
    for (;;) {
        skip_space(r);
        char *from = read_string(r);
        if (!from) return "config: not valid JSON";
        skip_space(r);
        if (r->p >= r->end || *r->p++ != ':') { free(from); return "config: not valid JSON"; }
        skip_space(r);
        char *to = read_string(r);
        if (!to) { free(from); return "config: every replacement in `replace` must be a string"; }
        policy_word *grown = realloc(out->words, (out->n_words + 1) * sizeof *grown);
        if (!grown) { free(from); free(to); return "config: out of memory"; }
        out->words = grown;
        out->words[out->n_words++] = (policy_word){from, to};
        skip_space(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == '}') { r->p++; return NULL; }
        return "config: not valid JSON";
    }
}

const char *policy_parse(const char *json, size_t len, policy_config *out) {
    reader r = {json, json + len};
    memset(out, 0, sizeof *out);
    skip_space(&r);
    if (r.p >= r.end || *r.p++ != '{') return "config: not a JSON object";
    skip_space(&r);
    if (r.p < r.end && *r.p == '}') r.p++;
    else for (;;) {
        skip_space(&r);
        char *key = read_string(&r);
        if (!key) return "config: not valid JSON";
        skip_space(&r);
        if (r.p >= r.end || *r.p++ != ':') { free(key); return "config: not valid JSON"; }
        skip_space(&r);
        const char *problem = NULL;
        if (strcmp(key, "header") == 0) {
            free(out->header);
            out->header = read_string(&r);
            if (!out->header) problem = "config: `header` must be a string";
        } else if (strcmp(key, "replace") == 0) {
            problem = read_words(&r, out);
        } else if (!skip_value(&r)) {
            problem = "config: not valid JSON";
        }
        free(key);
        if (problem) return problem;
        skip_space(&r);
        if (r.p < r.end && *r.p == ',') { r.p++; continue; }
        if (r.p < r.end && *r.p == '}') { r.p++; break; }
        return "config: not valid JSON";
    }
    int empty_word = 0;
    for (size_t i = 0; i < out->n_words; i++) empty_word |= out->words[i].from[0] == '\0';
    if (!out->header || out->header[0] == '\0' || empty_word) {
        return "config: `header` and every word of `replace` must be non-empty";
    }
    qsort(out->words, out->n_words, sizeof *out->words, by_from);
    return NULL;
}

char *policy_refusal(const policy_config *c, bool has_header) {
    if (has_header) return NULL;
    const char *a = PLUGIN_NAME ": requests need the `", *b = "` header";
    size_t n = strlen(a) + strlen(c->header) + strlen(b) + 1;
    char *msg = malloc(n);
    if (msg) {
        strcpy(msg, a);
        strcat(msg, c->header);
        strcat(msg, b);
    }
    return msg;
}

/* `text` with every `from` replaced by `to`; NULL when it does not occur. */
static char *replace_all(const char *text, size_t len, const char *from, const char *to, size_t *out_len) {
    size_t fl = strlen(from), tl = strlen(to), count = 0;
    for (size_t i = 0; fl && i + fl <= len;) {
        if (memcmp(text + i, from, fl) == 0) { count++; i += fl; } else { i++; }
    }
    if (count == 0) return NULL;
    size_t n = len - count * fl + count * tl;
    char *out = malloc(n + 1), *w = out;
    if (!out) return NULL;
    for (size_t i = 0; i < len;) {
        if (i + fl <= len && memcmp(text + i, from, fl) == 0) { memcpy(w, to, tl); w += tl; i += fl; }
        else { *w++ = text[i++]; }
    }
    *w = '\0';
    *out_len = n;
    return out;
}

char *policy_rewrite(const policy_config *c, const char *text, size_t len, size_t *out_len) {
    char *now = NULL;
    size_t now_len = len;
    for (size_t i = 0; i < c->n_words; i++) {
        size_t n;
        char *next = replace_all(now ? now : text, now_len, c->words[i].from, c->words[i].to, &n);
        if (next) {
            free(now);
            now = next;
            now_len = n;
        }
    }
    if (now) *out_len = now_len;
    return now;
}

void policy_free(policy_config *c) {
    for (size_t i = 0; i < c->n_words; i++) {
        free(c->words[i].from);
        free(c->words[i].to);
    }
    free(c->words);
    free(c->header);
    memset(c, 0, sizeof *c);
}
