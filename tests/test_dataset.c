/*
 * test_dataset.c - datasets: byte and BPE tokenization of text and JSONL, prompt masking,
 * the tokens cache, deterministic shuffling, resumable positions, rank shards, and bad
 * files named in errors.
 */
#include <stdlib.h>
#include <string.h>

#include "qt_data.h"
#include "testutil.h"

static char dir[] = "/tmp/qt_test_dataset_XXXXXX";

static const char *put(const char *name, const char *text) {
    static char paths[8][600];
    static int k;
    char *p = paths[k++ % 8];
    snprintf(p, 600, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static void test_bytes(void) {
    char text[5000];
    for (int i = 0; i < 4999; i++) text[i] = (char)('a' + i % 26);
    text[4999] = 0;
    const char *p = put("abc.txt", text);
    qt_dataset a, b;
    CHECK(qt_dataset_open_bytes(&a, p, 16, 0.1f, 7) == QT_OK, "open: %s", qt_error_message());
    CHECK(a.n_tokens == 4999 && a.n_train == (a.val_start - 1) / 16 && a.n_val > 0, "split");
    int32_t ids[4 * 16], tg[4 * 16], ids2[4 * 16], tg2[4 * 16];
    qt_dataset_next(&a, 4, ids, tg);
    bool shifted = true;
    for (int j = 0; j < 15; j++) shifted &= tg[j] == ids[j + 1];
    CHECK(shifted, "targets are the inputs shifted by one");
    CHECK(ids[0] >= 'a' && ids[0] <= 'z', "bytes as tokens");

    /* same seed, same order; a seek reproduces the stream */
    CHECK(qt_dataset_open_bytes(&b, p, 16, 0.1f, 7) == QT_OK, "reopen");
    qt_dataset_next(&b, 4, ids2, tg2);
    CHECK(!memcmp(ids, ids2, sizeof ids), "deterministic by seed");
    for (int i = 0; i < 100; i++) qt_dataset_next(&a, 4, ids, tg); /* crosses epochs */
    int64_t ep = a.epoch, pos = a.pos;
    qt_dataset_next(&a, 4, ids, tg);
    CHECK(qt_dataset_seek(&b, ep, pos) == QT_OK, "seek");
    qt_dataset_next(&b, 4, ids2, tg2);
    CHECK(ep >= 1 && !memcmp(ids, ids2, sizeof ids), "resume from (epoch, pos) gives the same data");
    qt_dataset_close(&b);
    CHECK(qt_dataset_open_bytes(&b, p, 16, 0.1f, 8) == QT_OK, "other seed");
    qt_dataset_next(&b, 4, ids2, tg2);
    qt_dataset_close(&b);

    /* two ranks with batch 3 read, between them, exactly what one process with batch 6
     * reads: rank r rows 3r .. 3r + 2, over several epochs (3 does not divide the
     * windows, so epoch boundaries fall inside a batch), ending at the same position */
    qt_dataset one, r0, r1;
    qt_dataset_open_bytes(&one, p, 16, 0.1f, 3);
    qt_dataset_open_bytes(&r0, p, 16, 0.1f, 3);
    qt_dataset_open_bytes(&r1, p, 16, 0.1f, 3);
    CHECK(qt_dataset_shard(&r0, 0, 2) == QT_OK && qt_dataset_shard(&r1, 1, 2) == QT_OK, "shard");
    CHECK(qt_dataset_shard(&r1, 2, 2) == QT_EINVAL, "rank out of range");
    int mismatch = 0, pos_differ = 0;
    int64_t batches = 3 * one.n_train / 6 + 1;
    for (int64_t i = 0; i < batches; i++) {
        int32_t x[6 * 16], y[6 * 16], x2[6 * 16], y2[6 * 16];
        qt_dataset_next(&one, 6, x, y);
        qt_dataset_next(&r0, 3, x2, y2);
        qt_dataset_next(&r1, 3, x2 + 3 * 16, y2 + 3 * 16);
        mismatch += memcmp(x, x2, sizeof x) != 0 || memcmp(y, y2, sizeof y) != 0;
        pos_differ += r0.epoch != one.epoch || r0.pos != one.pos || r1.epoch != one.epoch ||
                      r1.pos != one.pos;
    }
    CHECK(one.epoch >= 2, "the loop crossed epochs (epoch %lld)", (long long)one.epoch);
    CHECK(mismatch == 0, "2 ranks x 3 = 1 process x 6: %d of %lld batches differ", mismatch,
          (long long)batches);
    CHECK(pos_differ == 0, "every rank at the single process's (epoch, pos): %d differ",
          pos_differ);
    /* a position saved by 2 ranks resumes on 1 */
    int32_t x[6 * 16], y[6 * 16], x2[6 * 16], y2[6 * 16];
    qt_dataset_open_bytes(&b, p, 16, 0.1f, 3);
    CHECK(qt_dataset_seek(&b, r0.epoch, r0.pos) == QT_OK, "seek");
    qt_dataset_next(&b, 6, x, y);
    qt_dataset_next(&one, 6, x2, y2);
    CHECK(!memcmp(x, x2, sizeof x), "a 2-rank position resumes on 1 rank");
    qt_dataset_close(&b);
    qt_dataset_close(&one);
    qt_dataset_close(&r0);
    qt_dataset_close(&r1);
    qt_dataset_close(&a);

    CHECK(qt_dataset_open_bytes(&a, put("tiny.txt", "short"), 16, 0.1f, 1) == QT_EINVAL &&
              strstr(qt_error_message(), "tiny.txt"),
          "too short, named: %s", qt_error_message());
    CHECK(qt_dataset_open_bytes(&a, "/nonexistent/d.txt", 16, 0.1f, 1) == QT_EIO &&
              strstr(qt_error_message(), "/nonexistent/d.txt"),
          "missing file named");
}

static void test_jsonl(void) {
    qt_tokenizer *tok = NULL;
    CHECK(qt_tokenizer_load_json(QT_FIXTURES "/tok_gpt2.json", &tok) == QT_OK, "tokenizer: %s",
          qt_error_message());
    if (!tok) return;
    char buf[20000] = "";
    for (int i = 0; i < 60; i++) {
        char line[300];
        snprintf(line, sizeof line,
                 "{\"prompt\": \"Question %d: what is the capital of France?\", \"response\": "
                 "\"Paris, of course.\"}\n",
                 i);
        strcat(buf, line);
    }
    const char *p = put("chat.jsonl", buf);
    qt_dataset_config c = {.path = p, .tok = tok, .seq_len = 8, .val_fraction = 0.1f, .seed = 1,
                           .cache_dir = dir};
    qt_dataset ds;
    CHECK(qt_dataset_open(&ds, &c) == QT_OK, "jsonl: %s", qt_error_message());
    CHECK(ds.mask != NULL && !ds.from_cache, "prompt tokens are masked");
    /* the response tokens are exactly the unmasked ones: decode them */
    int32_t *resp = malloc((size_t)ds.n_tokens * sizeof(int32_t));
    size_t nr = 0;
    for (int64_t i = 0; i < ds.n_tokens && nr < 40; i++)
        if (ds.mask[i]) resp[nr++] = ds.tokens[i];
    char *text = NULL;
    size_t len = 0;
    qt_tokenizer_decode(tok, resp, nr, 0, &text, &len);
    CHECK(text && !strncmp(text, "Paris, of course.", 17), "unmasked tokens are the responses: '%s'",
          text ? text : "");
    free(text);
    free(resp);
    int32_t ids[8], tg[8];
    int masked = 0;
    for (int i = 0; i < 20; i++) {
        qt_dataset_next(&ds, 1, ids, tg);
        for (int j = 0; j < 8; j++) masked += tg[j] == -100;
    }
    CHECK(masked > 0, "masked targets reach the batches as the ignore index");
    int64_t n = ds.n_tokens;
    int32_t first = ds.tokens[0];
    qt_dataset_close(&ds);
    CHECK(qt_dataset_open(&ds, &c) == QT_OK && ds.from_cache && ds.n_tokens == n &&
              ds.tokens[0] == first && ds.mask,
          "second open reads the cache");
    qt_dataset_close(&ds);

    const char *t = put("docs.jsonl", "{\"text\": \"hello world, this is a document\"}\n\n"
                                      "{\"text\": \"another one with more words in it\"}\n");
    c.path = t;
    c.seq_len = 4;
    c.val_fraction = 0.0f;
    c.cache_dir = NULL;
    CHECK(qt_dataset_open(&ds, &c) == QT_OK && ds.mask == NULL, "text records: %s",
          qt_error_message());
    qt_dataset_close(&ds);

    c.val_fraction = 0.1f;
    c.path = put("bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 3}\n");
    CHECK(qt_dataset_open(&ds, &c) == QT_EFORMAT && strstr(qt_error_message(), "bad.jsonl:2"),
          "bad record names file:line: %s", qt_error_message());
    c.path = put("bad2.jsonl", "{\"text\": \"ok\"}\nnot json\n");
    CHECK(qt_dataset_open(&ds, &c) == QT_EFORMAT && strstr(qt_error_message(), "bad2.jsonl:2"),
          "malformed line named: %s", qt_error_message());
    c.path = put("empty.jsonl", "");
    CHECK(qt_dataset_open(&ds, &c) == QT_EINVAL, "empty dataset is an error");
    qt_tokenizer_free(tok);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_bytes();
    test_jsonl();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return qt_test_finish("test_dataset");
}
