/*
 * test_chat_template.c - prompt/response JSONL through chat templates (data/chat_template.c)
 * against transformers' apply_chat_template: for SmolLM2's and Qwen2's ChatML and
 * Llama-3's template, read from tokenizer_config.json fixtures, each record must give the
 * rendered text and ids transformers gives, with the loss mask on exactly the response
 * and its end marker (tests/fixtures/chat/expected.json, from
 * tests/fixtures/gen_chat_template_fixtures.py). Also: auto-detection, a template read from
 * GGUF metadata, an unknown template under auto (falls back to none with a note), forced
 * families with a tokenizer that lacks their special tokens, bad tokenizer_config.json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qt_data.h"
#include "qt_formats.h"
#include "testutil.h"

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* A one-line JSONL file holding {"prompt", "response"}; returns its path. */
static const char *jsonl_record(const char *prompt, const char *response) {
    static char path[128];
    snprintf(path, sizeof path, "/tmp/qt_test_chat_%d.jsonl", (int)getpid());
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", prompt);
    cJSON_AddStringToObject(o, "response", response);
    char *line = cJSON_PrintUnformatted(o);
    write_file(path, line);
    free(line);
    cJSON_Delete(o);
    return path;
}

/* One case: the rendered text, then the dataset's ids and mask, against the oracle. */
static void check_case(const char *what, const qt_tokenizer *tok, const qt_chat_template *chat,
                       const cJSON *c) {
    const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
    const char *resp = cJSON_GetObjectItem(c, "response")->valuestring;
    const char *want = cJSON_GetObjectItem(c, "text")->valuestring;
    const cJSON *ids = cJSON_GetObjectItem(c, "ids");
    int n = cJSON_GetArraySize(ids);
    int np = cJSON_GetObjectItem(c, "n_prompt")->valueint;
    int nt = cJSON_GetObjectItem(c, "n_train")->valueint;
    char *text = NULL;
    size_t plen = 0;
    qt_check_case(qt_chat_template_render(chat, prompt, resp, &text, &plen) == QT_OK, what,
                  "render failed");
    qt_check_case(text && !strcmp(text, want), what, "text\n got  %s\n want %s", text, want);
    free(text);

    qt_dataset ds;
    qt_dataset_config cfg = {.path = jsonl_record(prompt, resp), .format = QT_DATA_JSONL,
                             .tok = tok, .seq_len = 1, .chat = chat};
    qt_status st = qt_dataset_open(&ds, &cfg);
    qt_check_case(st == QT_OK, what, "open: %s", qt_error_message());
    if (st != QT_OK) return;
    qt_check_case(ds.n_tokens == n, what, "%lld ids, transformers has %d", (long long)ds.n_tokens, n);
    int bad_id = -1, bad_mask = -1;
    for (int i = 0; i < n && i < ds.n_tokens; i++) {
        if (ds.tokens[i] != cJSON_GetArrayItem(ids, i)->valueint && bad_id < 0) bad_id = i;
        int m = i >= np && i < np + nt;
        if (!ds.mask || ds.mask[i] != m) bad_mask = bad_mask < 0 ? i : bad_mask;
    }
    qt_check_case(bad_id < 0, what, "ids differ from transformers' at %d", bad_id);
    qt_check_case(bad_mask < 0, what, "mask wrong at %d (prompt %d, trained %d)", bad_mask, np, nt);
    qt_dataset_close(&ds);
}

static void test_families(void) {
    char *buf = NULL;
    qt_read_text_file(QT_FIXTURES "/chat/expected.json", &buf);
    cJSON *exp = buf ? cJSON_Parse(buf) : NULL;
    free(buf);
    CHECK(cJSON_IsArray(exp), "cannot read chat/expected.json");
    const cJSON *fam;
    cJSON_ArrayForEach(fam, exp) {
        const char *name = cJSON_GetObjectItem(fam, "name")->valuestring;
        const char *family = cJSON_GetObjectItem(fam, "family")->valuestring;
        char path[512];
        snprintf(path, sizeof path, QT_FIXTURES "/%s", cJSON_GetObjectItem(fam, "tokenizer")->valuestring);
        qt_tokenizer *tok = NULL;
        CHECK(qt_tokenizer_load_json(path, &tok) == QT_OK, "%s: %s", name, qt_error_message());
        snprintf(path, sizeof path, QT_FIXTURES "/%s",
                 cJSON_GetObjectItem(fam, "template_dir")->valuestring);
        char *jinja = NULL;
        CHECK(qt_chat_template_read(path, &jinja) == QT_OK && jinja, "%s: no template: %s", name,
              qt_error_message());
        qt_chat_template chat;
        char note[256];
        qt_status st = qt_chat_template_resolve("auto", jinja, tok, &chat, note, sizeof note);
        qt_chat_family want = !strcmp(family, "chatml") ? QT_CHAT_CHATML : QT_CHAT_LLAMA3;
        CHECK(st == QT_OK && chat.family == want && !note[0], "%s: auto picked %d (%s)", name,
              (int)chat.family, st == QT_OK ? note : qt_error_message());
        /* forcing the right family gives the same rendering as auto */
        qt_chat_template forced;
        CHECK(qt_chat_template_resolve(family, jinja, tok, &forced, note, sizeof note) == QT_OK &&
                  !memcmp(&forced, &chat, sizeof chat), "%s: forced %s differs from auto", name, family);
        const cJSON *c;
        int k = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(fam, "cases")) {
            char what[64];
            snprintf(what, sizeof what, "%s case %d", name, k++);
            if (tok && st == QT_OK) check_case(what, tok, &chat, c);
        }
        free(jinja);
        qt_tokenizer_free(tok);
    }
    cJSON_Delete(exp);
}

/* The template beside a tokenizer.json, and from GGUF metadata. */
static void test_sources(void) {
    char *a = NULL, *b = NULL;
    CHECK(qt_chat_template_read(QT_FIXTURES "/chat/llama3/tokenizer.json", &a) == QT_OK && a,
          "template beside tokenizer.json: %s", qt_error_message());
    char path[128];
    snprintf(path, sizeof path, "/tmp/qt_test_chat_%d.gguf", (int)getpid());
    qt_gguf_writer *w = NULL;
    qt_status st = qt_gguf_writer_init(&w);
    if (st == QT_OK && a) st = qt_gguf_writer_set_str(w, "tokenizer.chat_template", a, strlen(a));
    if (st == QT_OK) st = qt_gguf_writer_write(w, path);
    qt_gguf_writer_free(w);
    CHECK(st == QT_OK, "writing a GGUF: %s", qt_error_message());
    CHECK(qt_chat_template_read(path, &b) == QT_OK && b && a && !strcmp(a, b),
          "tokenizer.chat_template from GGUF differs");
    qt_chat_template t;
    CHECK(b && qt_chat_template_detect(b, &t) && t.family == QT_CHAT_LLAMA3 && t.trim,
          "GGUF template not detected as Llama 3");
    free(a);
    free(b);
    /* a GGUF without the key, a dir without tokenizer_config.json: no template */
    char *c = (char *)1;
    CHECK(qt_chat_template_read(QT_FIXTURES "/tok_llama3.gguf", &c) == QT_OK && !c,
          "GGUF without tokenizer.chat_template");
    c = (char *)1;
    CHECK(qt_chat_template_read(QT_FIXTURES "/tiny_llama", &c) == QT_OK && !c,
          "dir without tokenizer_config.json");
    unlink(path);
}

static void test_unknown_and_errors(void) {
    qt_tokenizer *sm = NULL;
    CHECK(qt_tokenizer_load_json(QT_FIXTURES "/tok_smollm.json", &sm) == QT_OK, "load smollm");
    qt_chat_template t;
    char note[256];
    /* Gemma's template: neither family */
    const char *gemma = "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + "
                        "message['role'] + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
                        "{% endfor %}";
    CHECK(qt_chat_template_resolve("auto", gemma, sm, &t, note, sizeof note) == QT_OK &&
              t.family == QT_CHAT_NONE && strstr(note, "not"),
          "unknown template under auto: family %d, note \"%s\"", (int)t.family, note);
    /* Llama 3.1's dated system header is more than qtrain renders */
    CHECK(!qt_chat_template_detect("<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge "
                                   "Date: December 2023<|eot_id|>", &t), "Llama 3.1 recognised");
    CHECK(!qt_chat_template_detect("<|im_start|><|im_end|><think>", &t), "Qwen3 recognised");
    /* no template: auto is none; none ignores a template */
    CHECK(qt_chat_template_resolve("auto", NULL, sm, &t, note, sizeof note) == QT_OK &&
              t.family == QT_CHAT_NONE && !note[0], "auto without a template");
    CHECK(qt_chat_template_resolve("none", "<|im_start|><|im_end|>", sm, &t, note, sizeof note) ==
              QT_OK && t.family == QT_CHAT_NONE, "none");
    /* forced without a template: ChatML without a system message */
    CHECK(qt_chat_template_resolve("chatml", NULL, sm, &t, note, sizeof note) == QT_OK &&
              t.family == QT_CHAT_CHATML && !t.system[0], "forced chatml");
    /* forced on tokenizers that lack the special tokens */
    qt_status st = qt_chat_template_resolve("chatml", NULL, NULL, &t, note, sizeof note);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "data.chat_template") &&
              strstr(qt_error_message(), "<|im_start|>"), "chatml on bytes: %s", qt_error_message());
    st = qt_chat_template_resolve("llama3", NULL, sm, &t, note, sizeof note);
    CHECK(st == QT_EINVAL && strstr(qt_error_message(), "data.chat_template") &&
              strstr(qt_error_message(), "<|begin_of_text|>"), "llama3 on smollm: %s",
          qt_error_message());
    CHECK(qt_chat_template_resolve("vicuna", NULL, sm, &t, note, sizeof note) == QT_EINVAL,
          "unknown mode");
    qt_tokenizer_free(sm);
}

/* Malformed tokenizer_config.json files. */
static void test_bad_config(void) {
    char dir[128], path[200];
    snprintf(dir, sizeof dir, "/tmp/qt_test_chat_dir_%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *bad[] = {"{\"chat_template\": 3}", "[1, 2]", "{\"chat_template\": \"{% for",
                         ""};
    for (int i = 0; i < 4; i++) {
        write_file(path, bad[i]);
        char *t = NULL;
        qt_status st = qt_chat_template_read(dir, &t);
        CHECK(st == QT_EFORMAT && !t, "bad config %d: status %d", i, (int)st);
        free(t);
    }
    /* a list with no "default": no template; null: none */
    write_file(path, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    char *t = (char *)1;
    CHECK(qt_chat_template_read(dir, &t) == QT_OK && !t, "list without default");
    write_file(path, "{\"chat_template\": null}");
    t = (char *)1;
    CHECK(qt_chat_template_read(dir, &t) == QT_OK && !t, "null template");
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_families();
    test_sources();
    test_unknown_and_errors();
    test_bad_config();
    char path[128];
    snprintf(path, sizeof path, "/tmp/qt_test_chat_%d.jsonl", (int)getpid());
    unlink(path);
    return qt_test_finish("test_chat_template");
}
