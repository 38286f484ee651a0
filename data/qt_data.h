/*
 * qt_data.h - the public interface of qtrain's data module.
 *
 * Tokenizer: byte-level BPE (GPT-2, Llama-3, SmolLM, Qwen2 families) that reproduces the
 * ids of HF `tokenizers` exactly. Built from a HF tokenizer.json, a GGUF's tokenizer.ggml.*
 * metadata, or the same arrays given directly. The pipeline is HF's:
 *   1. added tokens are cut out of the text first (leftmost-longest, whole tokens; with
 *      lstrip/rstrip eating the whitespace beside them); special ones only when asked;
 *      the text between them is put in NFC when the tokenizer has that normalizer (Qwen2);
 *   2. the pieces between them are split by the pre-tokenizer (hand-written matchers of
 *      the GPT-2, Llama-3 and Qwen2 regexes, and of Digits);
 *   3. each piece's UTF-8 bytes are mapped to GPT-2's byte-to-unicode alphabet and BPE-
 *      merged, lowest merge rank first (HF's model/bpe/word.rs order);
 *   4. the post-processor's template adds BOS/EOS when asked.
 * Text that is not valid UTF-8 is read as Python's bytes.decode("utf-8", "replace") reads
 * it (each maximal ill-formed subpart becomes U+FFFD), so its ids are HF's ids for that
 * decoded string; decoding then gives back EF BF BD for those bytes.
 *
 * A tokenizer is immutable once built: encode and decode may run on many threads at once.
 * Errors: QT_EIO (cannot read), QT_EFORMAT (malformed file or arrays), QT_ENOTSUP
 * (a well-formed tokenizer qtrain does not implement: WordPiece, a normalizer other than
 * NFC, an unknown regex, ...), QT_ENOMEM; qt_error_message() names the file and what was found.
 */
#ifndef QT_DATA_H
#define QT_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qt_autograd.h"
#include "qt_formats.h" /* qt_gguf */

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- tokenizer ---- */

typedef struct qt_tokenizer qt_tokenizer; /* opaque */

/* GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
enum {
    QT_TOKTYPE_NORMAL = 1,
    QT_TOKTYPE_UNKNOWN = 2,
    QT_TOKTYPE_CONTROL = 3,      /* special: matched in text only with QT_TOK_PARSE_SPECIAL */
    QT_TOKTYPE_USER_DEFINED = 4, /* added, not special: always matched in text as a whole */
    QT_TOKTYPE_UNUSED = 5,
    QT_TOKTYPE_BYTE = 6,
};

/* What a GGUF holds, to build a tokenizer from. Arrays are only read. */
typedef struct qt_tokenizer_vocab {
    const char *const *tokens; /* (n_tokens) in the byte-level alphabet; id = index */
    int32_t n_tokens;
    const char *const *merges; /* (n_merges) "left right", rank = index */
    int32_t n_merges;
    const int32_t *token_types; /* (n_tokens) QT_TOKTYPE_*, or NULL for all normal */
    const char *pre;            /* tokenizer.ggml.pre: "gpt2" ("gpt-2", "default"),
                                   "llama-bpe" ("llama3"), "smollm", "qwen2" (with NFC, as
                                   Qwen2's tokenizer.json has it); NULL = gpt2 */
    int32_t bos_id, eos_id;     /* -1 when absent */
    bool add_bos, add_eos;      /* what QT_TOK_ADD_SPECIAL adds */
} qt_tokenizer_vocab;

/* Reads a HF tokenizer.json: model BPE (vocab, merges as "a b" or [a, b], ignore_merges,
 * unk_token), added_tokens, pre_tokenizer ByteLevel or a Sequence of Split (a known
 * regex) / Digits / ByteLevel, normalizer null or NFC, post_processor ByteLevel /
 * TemplateProcessing / Sequence of them, decoder ByteLevel or null. On failure *out is
 * NULL. bos/eos: the template's leading special token, else the first of
 * <|begin_of_text|>, <s>, <|endoftext|> present; eos: <|end_of_text|>, </s>, <|endoftext|>,
 * <|im_end|>. */
qt_status qt_tokenizer_load_json(const char *path, qt_tokenizer **out);
qt_status qt_tokenizer_from_vocab(const qt_tokenizer_vocab *v, qt_tokenizer **out);
/* From a GGUF's tokenizer.ggml.* keys (model "gpt2", pre, tokens, token_type, merges,
 * bos/eos_token_id, add_bos/add_eos_token), as llama.cpp reads them. `src` names the file
 * in messages. A model loader that has the GGUF open passes it; load_gguf opens one. */
qt_status qt_tokenizer_from_gguf(const qt_gguf *g, const char *src, qt_tokenizer **out);
qt_status qt_tokenizer_load_gguf(const char *path, qt_tokenizer **out);
/* The inverse of qt_tokenizer_from_vocab, for writing a GGUF: every id's token (an id
 * with none is "[PAD<id>]" of type UNUSED), its type (CONTROL for special added tokens,
 * USER_DEFINED for other added ones, UNKNOWN, NORMAL) as llama.cpp's converter writes
 * them, merges in rank order, the pre-tokenizer as llama.cpp names it, bos/eos and
 * whether encode adds them. Everything in *v is malloc'ed: free with
 * qt_tokenizer_vocab_free (pre is static). QT_ENOTSUP when llama.cpp has no pre-tokenizer
 * that splits alike (add_prefix_space, an unnamed Sequence). */
qt_status qt_tokenizer_to_vocab(const qt_tokenizer *tok, qt_tokenizer_vocab *v);
void qt_tokenizer_vocab_free(qt_tokenizer_vocab *v);
void qt_tokenizer_free(qt_tokenizer *tok);

/* Flags of qt_tokenizer_encode / qt_tokenizer_decode. */
enum {
    QT_TOK_ADD_SPECIAL = 1u << 0,   /* encode: apply the post-processor (BOS/EOS) */
    QT_TOK_PARSE_SPECIAL = 1u << 1, /* encode: special tokens written in the text are matched
                                       as those tokens (HF's default); without it they are
                                       split like any text (HF's encode_special_tokens) */
    QT_TOK_SKIP_SPECIAL = 1u << 2,  /* decode: leave special tokens out */
};

/* Encodes len bytes of text. *ids is malloc'ed (free() it; may be NULL when *n is 0).
 * Scratch is about 8 bytes per input byte (5x that with NFC), freed before returning:
 * feed it documents or lines, not a whole corpus at once. Measured ~20-30 MB/s of mixed
 * text on one core (tests/test_tokenizer prints it). */
qt_status qt_tokenizer_encode(const qt_tokenizer *tok, const char *text, size_t len, unsigned flags,
                              int32_t **ids, size_t *n);
/* Decodes ids to bytes: *text is malloc'ed and NUL-terminated (free() it), *len excludes
 * the NUL. Bytes are returned as they are, not made valid UTF-8 (a sequence cut in two
 * by a streaming caller joins up again). An id out of range is QT_EINVAL. */
qt_status qt_tokenizer_decode(const qt_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                              char **text, size_t *len);

/* Number of ids (the largest id + 1, counting added tokens). */
int32_t qt_tokenizer_vocab_size(const qt_tokenizer *tok);
/* The token's string as the vocab spells it (byte-level alphabet), NULL if id unused. */
const char *qt_tokenizer_token(const qt_tokenizer *tok, int32_t id);
/* The id of a vocab or added token string, -1 if absent. */
int32_t qt_tokenizer_token_id(const qt_tokenizer *tok, const char *token);
bool qt_tokenizer_is_special(const qt_tokenizer *tok, int32_t id);
int32_t qt_tokenizer_bos(const qt_tokenizer *tok); /* -1 if none */
int32_t qt_tokenizer_eos(const qt_tokenizer *tok); /* -1 if none */

/* ------------------------------------------------------------ chat templates ----
 * Prompt/response records rendered as an instruct model's chat template renders one user
 * turn and one assistant turn (transformers' apply_chat_template). No Jinja engine: the
 * two families small instruct models use are recognised in the template text and
 * rendered exactly (data/chat_template.c lists what is and is not recognised). */
typedef enum {
    QT_CHAT_NONE,   /* prompt + response as plain text (BOS/EOS from the tokenizer) */
    QT_CHAT_CHATML, /* <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2) */
    QT_CHAT_LLAMA3, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
} qt_chat_family;

typedef struct {
    qt_chat_family family;
    char system[512]; /* ChatML: the system message the template adds when there is none */
    bool trim;        /* Llama 3: contents are `| trim`med */
} qt_chat_template;

/* A model's chat template: path is a HF model dir (its tokenizer_config.json), a
 * tokenizer.json (the tokenizer_config.json beside it) or a .gguf (tokenizer.chat_template).
 * "chat_template" may be a string or a list of {name, template} ("default" is taken).
 * *text is malloc'ed, NULL when the model has none (no config file, no key). */
qt_status qt_chat_template_read(const char *path, char **text);
/* Recognises a Jinja template's family (and ChatML's default system message); false when
 * it is neither ChatML nor Llama 3, or renders more than they do (Llama 3.1+, Qwen3). */
bool qt_chat_template_detect(const char *jinja, qt_chat_template *out);
/* Resolves the recipe's data.chat_template: mode auto (jinja's family when recognised;
 * none when jinja is NULL or unknown, with a line for the caller to print in note), none,
 * chatml or llama3 (forced; jinja, when of that family, still gives the default system
 * message). QT_EINVAL, naming data.chat_template and the token, when tok (NULL = bytes)
 * lacks one of the family's special tokens. */
qt_status qt_chat_template_resolve(const char *mode, const char *jinja, const qt_tokenizer *tok,
                                   qt_chat_template *out, char *note, size_t note_n);
/* Renders one record: *text is malloc'ed; its first *prompt_len bytes are the prompt part
 * (through the assistant header), the rest is the response and its end marker. */
qt_status qt_chat_template_render(const qt_chat_template *t, const char *prompt,
                                  const char *response, char **text, size_t *prompt_len);
/* The end marker's id (<|im_end|> / <|eot_id|>), -1 for none. */
int32_t qt_chat_template_end_id(const qt_chat_template *t, const qt_tokenizer *tok);

/* ---------------------------------------------------------------- datasets ----
 * A dataset is one token stream cut into windows of seq_len + 1 tokens (inputs and
 * next-token targets overlap by one). The last val_fraction of the stream is held out
 * for validation. Training windows are visited in an order shuffled per epoch by the
 * seed; the position (epoch, index) is all the state there is, so a run resumes exactly
 * by restoring it. With world > 1 every rank's call reads its slice of one global batch:
 * world ranks with batch B see exactly the windows one process with batch world B does
 * (rank r gets rows r B .. r B + B - 1), so (epoch, pos) is global and a run resumes on
 * any number of ranks. */
typedef struct {
    int32_t *tokens;     /* (n_tokens) the whole stream */
    uint8_t *mask;       /* (n_tokens) 0 = never a target (a prompt token); NULL = all count */
    int64_t n_tokens;
    int64_t seq_len;
    int64_t n_train;     /* training windows */
    int64_t n_val;       /* validation windows */
    int64_t val_start;   /* first token of the validation part */
    uint64_t seed;
    int64_t *order;      /* (n_train) this epoch's window order */
    int64_t epoch, pos;  /* resumable position: next index into order */
    int rank, world;
    bool from_cache;     /* the tokens came from a cache file */
} qt_dataset;

typedef enum {
    QT_DATA_AUTO,  /* by extension: .jsonl -> JSONL, anything else -> text */
    QT_DATA_TEXT,  /* one document: the whole file */
    QT_DATA_JSONL, /* one JSON object per line: {"text": ...} or {"prompt": ..., "response": ...} */
} qt_data_format;

typedef struct {
    const char *path;
    qt_data_format format;
    const qt_tokenizer *tok; /* NULL: bytes, one token per byte (vocab 256) */
    int64_t seq_len;
    float val_fraction;
    uint64_t seed;
    const char *cache_dir;   /* tokenize once into a cache file here; NULL = no cache */
    const qt_chat_template *chat; /* prompt/response records; NULL = QT_CHAT_NONE */
} qt_dataset_config;

/* Tokenizes (or loads from the cache) and splits. Documents are joined as they come:
 * a tokenizer's BOS/EOS mark their bounds (bytes: a newline ends each JSONL record).
 * For prompt/response records the prompt's tokens are masked out of the loss. With a chat
 * template each record is exactly the template's ids (special tokens parsed, no extra
 * BOS/EOS); the loss sees the response through its end marker. Errors
 * name the file (and line, for JSONL): missing, unreadable, malformed, too short. */
qt_status qt_dataset_open(qt_dataset *ds, const qt_dataset_config *cfg);
/* Shorthand: a text file as bytes, no cache. */
qt_status qt_dataset_open_bytes(qt_dataset *ds, const char *path, int64_t seq_len,
                                float val_fraction, uint64_t seed);
void qt_dataset_close(qt_dataset *ds);
/* This process's share of each batch (rank in [0, world)). */
qt_status qt_dataset_shard(qt_dataset *ds, int rank, int world);
/* Next B training windows into ids and targets (B * seq_len each), advancing the
 * position and reshuffling at each epoch boundary. */
void qt_dataset_next(qt_dataset *ds, int64_t B, int32_t *ids, int32_t *targets);
/* Validation windows [first, first + B) (wrapping), for evaluation. */
void qt_dataset_val(const qt_dataset *ds, int64_t first, int64_t B, int32_t *ids,
                    int32_t *targets);
/* Moves to a saved position (resume). */
qt_status qt_dataset_seek(qt_dataset *ds, int64_t epoch, int64_t pos);


#ifdef __cplusplus
}
#endif
#endif /* QT_DATA_H */
