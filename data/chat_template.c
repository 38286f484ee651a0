/*
 * chat_template.c - chat templates for prompt/response training data, without a Jinja
 * engine: the two families almost every small instruct model uses are recognised in the
 * model's template text and rendered exactly as transformers' apply_chat_template renders
 * one user turn and one assistant turn (tests/fixtures/gen_chat_template_fixtures.py is
 * the oracle):
 *   ChatML (SmolLM2, Qwen2): [<|im_start|>system\n{default}<|im_end|>\n]
 *       <|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n
 *     where {default} is the system message literal the template inserts when the
 *     conversation has none (SmolLM2's "You are a helpful AI assistant named SmolLM, ...",
 *     Qwen2's "You are a helpful assistant.");
 *   Llama 3 (Meta-Llama-3-*-Instruct): <|begin_of_text|><|start_header_id|>user
 *       <|end_header_id|>\n\n{prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>
 *       \n\n{response}<|eot_id|>   with both contents `| trim`med (Python's str.strip).
 * Templates that render more than this for a plain conversation are not recognised:
 * Llama 3.1+ (a "Cutting Knowledge Date" system header with today's date) and Qwen3
 * (<think> blocks).
 * The template is read from a HF model's tokenizer_config.json "chat_template" (a string,
 * or a list of {name, template} of which "default" is taken) or a GGUF's
 * tokenizer.chat_template.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "qt_data.h"

/* ---- reading the template ---------------------------------------------------------- */

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static qt_status read_gguf_template(const char *path, char **text) {
    qt_gguf *g = NULL;
    qt_status st = qt_gguf_open(path, &g);
    if (st != QT_OK) return st;
    const char *s = NULL;
    size_t len = 0;
    if (qt_gguf_find_key(g, "tokenizer.chat_template") >= 0 &&
        qt_gguf_get_str(g, "tokenizer.chat_template", &s, &len) == QT_OK) {
        *text = malloc(len + 1);
        if (*text) {
            memcpy(*text, s, len);
            (*text)[len] = 0;
        } else {
            st = QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
        }
    }
    qt_gguf_close(g);
    return st;
}

/* "chat_template": a string, or [{"name": ..., "template": ...}] (take "default"). */
static qt_status config_template(const cJSON *ct, const char *path, char **text) {
    const char *s = NULL;
    if (cJSON_IsString(ct)) {
        s = ct->valuestring;
    } else if (cJSON_IsArray(ct)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, ct) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(n) && !strcmp(n->valuestring, "default") && cJSON_IsString(t))
                s = t->valuestring;
        }
        if (!s) return QT_OK; /* named templates only (tool_use, rag): no default */
    } else if (ct && !cJSON_IsNull(ct)) {
        return QT_ERROR(QT_EFORMAT, "%s: chat_template must be a string or a list of "
                                    "{name, template}", path);
    }
    if (s && !(*text = strdup(s))) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    return QT_OK;
}

static qt_status read_config_template(const char *path, char **text) {
    struct stat sb;
    if (stat(path, &sb) != 0) return QT_OK; /* no tokenizer_config.json: no template */
    char *buf = NULL;
    qt_status rst = qt_read_text_file(path, &buf);
    if (rst != QT_OK) return rst;
    cJSON *o = cJSON_Parse(buf);
    free(buf);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return QT_ERROR(QT_EFORMAT, "%s: not a JSON object", path);
    }
    qt_status st = config_template(cJSON_GetObjectItemCaseSensitive(o, "chat_template"), path, text);
    cJSON_Delete(o);
    return st;
}

qt_status qt_chat_template_read(const char *path, char **text) {
    *text = NULL;
    if (has_suffix(path, ".gguf")) return read_gguf_template(path, text);
    char cfg[4200];
    if (has_suffix(path, ".json")) { /* a tokenizer.json: the config beside it */
        const char *slash = strrchr(path, '/');
        int dir = slash ? (int)(slash - path) : 1;
        snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", dir, slash ? path : ".");
    } else {
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", path);
    }
    return read_config_template(cfg, text);
}

/* ---- recognising it ---------------------------------------------------------------- */

/* ChatML's default system message: a literal '<|im_start|>system\n...<|im_end|>' in the
 * template (the newline written as a newline or as Jinja's \n escape), with no Jinja
 * expression inside. Qwen2.5 also has a tools branch that concatenates; that occurrence
 * is skipped because it closes the string literal before <|im_end|>. */
static void chatml_default_system(const char *jinja, char *out, size_t n) {
    out[0] = 0;
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(jinja, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e || e == q || (size_t)(e - q) >= n) continue;
        size_t k = 0;
        bool literal = true;
        for (const char *c = q; c < e && literal; c++) {
            if (*c == '\'' || *c == '"' || *c == '{' || *c == '}') literal = false;
            else if (*c == '\\' && c + 1 < e) { /* Jinja string escapes */
                c++;
                out[k++] = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c;
            } else {
                out[k++] = *c;
            }
        }
        out[literal ? k : 0] = 0;
        if (literal) return;
    }
}

bool qt_chat_template_detect(const char *jinja, qt_chat_template *out) {
    memset(out, 0, sizeof *out);
    bool chatml = strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>");
    bool llama3 = strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>") &&
                  strstr(jinja, "<|eot_id|>");
    if (chatml == llama3) return false;
    if (chatml) {
        if (strstr(jinja, "<think>")) return false; /* Qwen3: reasoning blocks */
        out->family = QT_CHAT_CHATML;
        chatml_default_system(jinja, out->system, sizeof out->system);
        return true;
    }
    if (strstr(jinja, "Cutting Knowledge Date")) return false; /* Llama 3.1+: dated system */
    out->family = QT_CHAT_LLAMA3;
    out->trim = strstr(jinja, "trim") != NULL;
    return true;
}

/* ---- resolving data.chat_template -------------------------------------------------- */

static const char *const k_chatml_tokens[] = {"<|im_start|>", "<|im_end|>", NULL};
static const char *const k_llama3_tokens[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                               "<|end_header_id|>", "<|eot_id|>", NULL};

/* The special tokens a family needs, each one id. */
static qt_status check_tokens(const qt_tokenizer *tok, const char *mode) {
    const char *const *need = !strcmp(mode, "chatml") ? k_chatml_tokens : k_llama3_tokens;
    for (; *need; need++)
        if (!tok || qt_tokenizer_token_id(tok, *need) < 0)
            return QT_ERROR(QT_EINVAL, "data.chat_template %s needs the special token %s, which "
                                       "%s lacks", mode, *need,
                            tok ? "the tokenizer" : "data.tokenizer bytes");
    return QT_OK;
}

qt_status qt_chat_template_resolve(const char *mode, const char *jinja, const qt_tokenizer *tok,
                                   qt_chat_template *out, char *note, size_t note_n) {
    memset(out, 0, sizeof *out);
    if (note_n) note[0] = 0;
    if (!strcmp(mode, "none")) return QT_OK;
    qt_chat_template found;
    bool known = jinja && qt_chat_template_detect(jinja, &found);
    if (!strcmp(mode, "auto")) {
        if (!jinja) return QT_OK;
        if (!known) {
            snprintf(note, note_n, "data.chat_template auto: the model's chat template is not "
                                   "ChatML or Llama 3 as qtrain renders them; prompt and "
                                   "response are used as plain text");
            return QT_OK;
        }
        *out = found;
        return check_tokens(tok, out->family == QT_CHAT_CHATML ? "chatml" : "llama3");
    }
    if (strcmp(mode, "chatml") && strcmp(mode, "llama3"))
        return QT_ERROR(QT_EINVAL, "data.chat_template must be auto, none, chatml or llama3, "
                                   "got \"%s\"", mode);
    qt_status st = check_tokens(tok, mode);
    if (st != QT_OK) return st;
    out->family = !strcmp(mode, "chatml") ? QT_CHAT_CHATML : QT_CHAT_LLAMA3;
    if (known && found.family == out->family) *out = found; /* its default system, trim */
    else out->trim = out->family == QT_CHAT_LLAMA3;         /* Llama-3's own template trims */
    return QT_OK;
}

/* ---- rendering --------------------------------------------------------------------- */

/* Length of the Unicode White_Space character at s (Python's str.isspace), 0 if none. */
static size_t space_len(const unsigned char *s, size_t n) {
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || s[0] == ' ' || (s[0] >= 0x1c && s[0] <= 0x1f)))
        return 1;
    if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3; /* U+1680 */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
        (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
        return 3; /* U+2000..200A, 2028, 2029, 202F */
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3; /* U+205F */
    if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

/* Jinja's `| trim` (str.strip()): the span of s without leading/trailing white space. */
static void trim_span(const char *s, size_t *off, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = strlen(s), k;
    while (a < b && (k = space_len(u + a, b - a))) a += k;
    for (bool cut = true; cut;) { /* white space is 1, 2 or 3 bytes of UTF-8 */
        cut = false;
        for (k = 1; k <= 3 && !cut; k++)
            if (b - a >= k && space_len(u + b - k, k) == k) {
                b -= k;
                cut = true;
            }
    }
    *off = a;
    *len = b - a;
}

qt_status qt_chat_template_render(const qt_chat_template *t, const char *prompt,
                                  const char *response, char **text, size_t *prompt_len) {
    size_t po = 0, pl = strlen(prompt), ro = 0, rl = strlen(response);
    if (t->trim) {
        trim_span(prompt, &po, &pl);
        trim_span(response, &ro, &rl);
    }
    size_t cap = pl + rl + strlen(t->system) + 256;
    char *out = malloc(cap);
    if (!out) return QT_ERROR(QT_ENOMEM, "chat template: out of memory");
    int np, nr;
    if (t->family == QT_CHAT_CHATML) {
        char sys[sizeof t->system + 64] = "";
        if (t->system[0]) snprintf(sys, sizeof sys, "<|im_start|>system\n%s<|im_end|>\n", t->system);
        np = snprintf(out, cap, "%s<|im_start|>user\n%.*s<|im_end|>\n<|im_start|>assistant\n", sys,
                      (int)pl, prompt + po);
        nr = snprintf(out + np, cap - (size_t)np, "%.*s<|im_end|>\n", (int)rl, response + ro);
    } else {
        np = snprintf(out, cap, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n%.*s"
                                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                      (int)pl, prompt + po);
        nr = snprintf(out + np, cap - (size_t)np, "%.*s<|eot_id|>", (int)rl, response + ro);
    }
    (void)nr;
    *text = out;
    *prompt_len = (size_t)np;
    return QT_OK;
}

int32_t qt_chat_template_end_id(const qt_chat_template *t, const qt_tokenizer *tok) {
    if (!tok || t->family == QT_CHAT_NONE) return -1;
    return qt_tokenizer_token_id(tok, t->family == QT_CHAT_CHATML ? "<|im_end|>" : "<|eot_id|>");
}
