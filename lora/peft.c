/*
 * peft.c - LoRA adapters in PEFT's on-disk layout (peft: utils/save_and_load.py,
 * tuners/lora/config.py; ../shared/FORMATS.md "PEFT LoRA adapters"):
 *     adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}
 *     adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" (r, in),
 *                                "base_model.model.<module>.lora_B.weight" (out, r),
 *                                __metadata__ {"format": "pt"}
 * so an adapter trained here loads with PeftModel.from_pretrained and one trained with
 * PEFT loads here.
 *
 * Which modules an adapter covers is decided as PEFT decides it (tuners_utils.py
 * check_target_module_exists): a target_modules list entry selects the Linear layers
 * whose name equals it or ends in "." + it; the string "all-linear" selects every decoder
 * Linear (not lm_head); absent or null means PEFT's default for Llama-family models,
 * q_proj and v_proj. PEFT itself saves "all-linear" expanded into full module names (one
 * per layer), so the selection is turned back into the fewest qt_lora targets (a short
 * name where it covers every layer, full names elsewhere) before qt_lora_attach.
 *
 * Surprises: PEFT names tensors with the adapter name in memory
 * ("lora_A.default.weight") and without it in files; both are read. Options that change
 * the computation and that qt_lora does not implement (DoRA, per-module rank or alpha
 * patterns, layers_to_transform, modules_to_save, LoRA bias) are refused by name rather
 * than dropped. The directory is written whole into <dir>.tmp.<pid> and renamed into
 * place, as export/export_dir.c writes checkpoints.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qt_formats.h"
#include "qt_lora.h"

#define PEFT_CONFIG "adapter_config.json"
#define PEFT_WEIGHTS "adapter_model.safetensors"
#define PEFT_PREFIX "base_model.model."

/* The Linear layers of a Llama block, as transformers names them (short name last). */
static const char *const LINEAR_NAMES[7] = {"self_attn.q_proj", "self_attn.k_proj",
                                            "self_attn.v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj",    "mlp.up_proj",
                                            "mlp.down_proj"};

static const char *short_of(const char *module) {
    const char *d = strrchr(module, '.');
    return d ? d + 1 : module;
}

/* -------------------------------------------------------------------- save ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A directory a save may replace: empty, or an adapter directory (only regular files,
 * among them an adapter_config.json with a "peft_type"). Anything else, a base model or
 * a training run, is refused rather than deleted. */
static bool replaceable(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true, empty = true, is_adapter = false;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        empty = false;
        char *path = qt_path_join(dir, e->d_name);
        struct stat sb;
        ok = path && lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        if (ok && !strcmp(e->d_name, PEFT_CONFIG)) {
            char *text = NULL;
            if (qt_read_text_file(path, &text) == QT_OK) {
                cJSON *j = cJSON_Parse(text);
                is_adapter = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "peft_type"));
                cJSON_Delete(j);
            }
            free(text);
        }
        free(path);
    }
    closedir(d);
    qt_error_clear();
    return ok && (empty || is_adapter);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* target_modules for what l adapted: the sorted short names when each covers the same
 * layers in every block (what PEFT users write), else the full module names, which PEFT
 * matches exactly (a pattern-selected subset must not grow on reload). */
static cJSON *target_modules(const qt_lora *l) {
    const qt_llama *lm = &l->m->llama;
    const char **names = malloc((size_t)(l->n ? l->n : 1) * sizeof *names);
    if (!names) return NULL;
    int n = 0;
    for (int i = 0; i < l->n; i++) names[n++] = l->layers[i].short_name;
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
    bool short_ok = true;
    for (int i = 0; i < u && short_ok; i++) {
        int count = 0;
        for (int k = 0; k < l->n; k++) count += !strcmp(l->layers[k].short_name, names[i]);
        short_ok = count == lm->cfg.n_layers;
    }
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < (short_ok ? u : l->n); i++) {
        cJSON *s = cJSON_CreateString(short_ok ? names[i] : l->layers[i].module);
        if (!s) {
            cJSON_Delete(a);
            a = NULL;
        } else {
            cJSON_AddItemToArray(a, s);
        }
    }
    free(names);
    return a;
}

static cJSON *config_json(const qt_lora *l, const char *base_name) {
    cJSON *j = cJSON_CreateObject(), *tm = target_modules(l);
    if (!j || !tm) {
        cJSON_Delete(j);
        cJSON_Delete(tm);
        return NULL;
    }
    /* the keys PEFT has read since 0.9; newer ones are left to its defaults so older
     * PEFT versions do not meet a key they reject */
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    if (base_name) cJSON_AddStringToObject(j, "base_model_name_or_path", base_name);
    else cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddNumberToObject(j, "r", l->cfg.rank);
    cJSON_AddNumberToObject(j, "lora_alpha", l->cfg.alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", l->cfg.dropout);
    cJSON_AddItemToObject(j, "target_modules", tm);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", false);
    cJSON_AddBoolToObject(j, "use_rslora", l->cfg.rslora);
    cJSON_AddBoolToObject(j, "use_dora", false);
    cJSON_AddBoolToObject(j, "init_lora_weights", true);
    cJSON_AddBoolToObject(j, "inference_mode", true);
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddItemToObject(j, "rank_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(j, "alpha_pattern", cJSON_CreateObject());
    return j;
}

static qt_status fill_dir(const qt_lora *l, const char *tmp, const char *base_name) {
    /* adapter_model.safetensors: every A and B read back to the host (the paramset may
     * live on a GPU), in layer order */
    size_t total = 0;
    for (int i = 0; i < l->n; i++)
        total += (size_t)qt_numel(l->layers[i].a) + (size_t)qt_numel(l->layers[i].b);
    float *buf = malloc((total ? total : 1) * sizeof *buf);
    qt_st_tensor *t = calloc((size_t)(2 * l->n + 1), sizeof *t);
    char(*names)[192] = malloc((size_t)(2 * l->n + 1) * sizeof *names);
    qt_status s = buf && t && names ? QT_OK : QT_ERROR(QT_ENOMEM, "lora: out of memory saving");
    size_t off = 0;
    for (int i = 0; i < 2 * l->n && s == QT_OK; i++) {
        const qt_lora_layer *L = &l->layers[i / 2];
        const qt_tensor *p = i % 2 ? L->b : L->a;
        if (p->dtype != QT_F32) {
            s = QT_ERROR(QT_EDTYPE, "lora: %s is %s, expected F32", p->name, qt_dtype_name(p->dtype));
            break;
        }
        s = qt_tensor_read(p, buf + off);
        snprintf(names[i], sizeof names[i], PEFT_PREFIX "%s.lora_%c.weight", L->module,
                 i % 2 ? 'B' : 'A');
        t[i].name = names[i];
        t[i].dtype = QT_F32;
        t[i].ndim = 2;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        t[i].data = buf + off;
        t[i].nbytes = (size_t)qt_numel(p) * sizeof(float);
        off += (size_t)qt_numel(p);
    }
    if (s == QT_OK) {
        const char *meta[2] = {"format", "pt"};
        char *path = qt_path_join(tmp, PEFT_WEIGHTS);
        s = path ? qt_safetensors_write(path, t, 2 * l->n, meta, 1)
                 : QT_ERROR(QT_ENOMEM, "lora: out of memory saving");
        free(path);
    }
    free(buf);
    free(t);
    free(names);
    if (s != QT_OK) return s;

    cJSON *j = config_json(l, base_name);
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    char *path = qt_path_join(tmp, PEFT_CONFIG);
    if (!text || !path) {
        cJSON_free(text);
        free(path);
        return QT_ERROR(QT_ENOMEM, "lora: out of memory writing " PEFT_CONFIG);
    }
    qt_atomic_file f;
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, text, strlen(text));
    qt_atomic_file_write(&f, "\n", 1);
    s = qt_atomic_file_commit(&f);
    cJSON_free(text);
    free(path);
    return s;
}

static qt_status save_dir(const qt_lora *l, const char *d, const char *tmp, const char *old,
                          const char *base_name);

qt_status qt_lora_save_peft(const qt_lora *l, const char *dir, const char *base_name) {
    if (!l || !l->m || !dir || !*dir)
        return QT_ERROR(QT_EINVAL, "lora save: NULL adapter or empty directory name");
    if (l->m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "lora save: only Llama-family models");
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--; /* "out/" -> siblings of "out", not inside */
    char *d = malloc(dl + 1), *tmp = malloc(dl + 32), *old = malloc(dl + 32);
    if (!d || !tmp || !old) {
        free(d);
        free(tmp);
        free(old);
        return QT_ERROR(QT_ENOMEM, "lora save: out of memory");
    }
    memcpy(d, dir, dl);
    d[dl] = 0;
    snprintf(tmp, dl + 32, "%s.tmp.%ld", d, (long)getpid());
    snprintf(old, dl + 32, "%s.old.%ld", d, (long)getpid());
    qt_status s = save_dir(l, d, tmp, old, base_name);
    free(d);
    free(tmp);
    free(old);
    return s;
}

static qt_status save_dir(const qt_lora *l, const char *d, const char *tmp, const char *old,
                          const char *base_name) {
    struct stat sb;
    bool exists = stat(d, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode))
        return QT_ERROR(QT_EINVAL, "lora save: %s exists and is not a directory; refusing to "
                                   "overwrite it", d);
    if (exists && !replaceable(d))
        return QT_ERROR(QT_EINVAL, "lora save: %s exists and is not a PEFT adapter directory "
                                   "(nor empty); refusing to replace it", d);
    rm_tree(tmp); /* a leftover of a killed run of this pid */
    qt_status s = QT_OK;
    if (mkdir(tmp, 0755) != 0)
        s = QT_ERROR(QT_EIO, "lora save: cannot create %s: %s", tmp, strerror(errno));
    if (s == QT_OK) s = fill_dir(l, tmp, base_name);
    if (s == QT_OK) {
        if (exists && rename(d, old) != 0) {
            s = QT_ERROR(QT_EIO, "lora save: cannot move the existing %s aside: %s", d,
                         strerror(errno));
        } else if (rename(tmp, d) != 0) {
            s = QT_ERROR(QT_EIO, "lora save: cannot rename %s to %s: %s", tmp, d, strerror(errno));
            if (exists) rename(old, d);
        } else if (exists) {
            rm_tree(old);
        }
    }
    if (s != QT_OK) rm_tree(tmp);
    return s;
}

/* -------------------------------------------------------------------- load ---- */

/* What adapter_config.json says, and the modules it selects in m. */
typedef struct {
    int r;
    float alpha, dropout;
    bool rslora;
    int n_mod;                        /* selected Linear layers */
    char (*mod)[128];                 /* (n_mod) full module names, in model order */
    int n_targets;                    /* the same selection as qt_lora targets */
    char targets[QT_LORA_MAX_TARGETS][96];
} peft_cfg;

/* PEFT's check_target_module_exists for a list entry: equal, or a "."-suffix. */
static bool peft_matches(const char *entry, const char *module) {
    size_t n = strlen(module), k = strlen(entry);
    if (!strcmp(entry, module)) return true;
    return k < n && module[n - k - 1] == '.' && !strcmp(module + n - k, entry);
}

/* A JSON value is absent or means "nothing": null, false, "", [], {}. */
static bool unset(const cJSON *v) {
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
           (cJSON_IsString(v) && !*v->valuestring) ||
           ((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child);
}

static qt_status get_num(const cJSON *j, const char *path, const char *key, double def,
                         double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return QT_OK;
    }
    if (!cJSON_IsNumber(v))
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return QT_OK;
}

static qt_status get_bool(const cJSON *j, const char *path, const char *key, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) {
        *out = false;
        return QT_OK;
    }
    if (!cJSON_IsBool(v)) return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return QT_OK;
}

/* The fewest targets that select exactly cfg->mod: per short name, the name itself when
 * it is selected in every layer, else each full module name. */
static qt_status compact_targets(peft_cfg *c, const char *path, int n_layers) {
    c->n_targets = 0;
    for (int k = 0; k < 7; k++) {
        const char *sn = short_of(LINEAR_NAMES[k]);
        int count = 0;
        for (int i = 0; i < c->n_mod; i++) count += !strcmp(short_of(c->mod[i]), sn);
        if (!count) continue;
        for (int i = 0; i < c->n_mod; i++) {
            if (strcmp(short_of(c->mod[i]), sn)) continue;
            if (c->n_targets == QT_LORA_MAX_TARGETS)
                return QT_ERROR(QT_ENOTSUP, "%s: target_modules selects %d modules in a pattern "
                                            "qtrain cannot express in %d targets", path,
                                c->n_mod, QT_LORA_MAX_TARGETS);
            snprintf(c->targets[c->n_targets++], sizeof c->targets[0], "%s",
                     count == n_layers ? sn : c->mod[i]);
            if (count == n_layers) break;
        }
    }
    return QT_OK;
}

/* Fills c->mod with the Linear layers of m that PEFT's config selects. */
static qt_status select_modules(peft_cfg *c, const qt_model *m, const cJSON *j, const char *path) {
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "exclude_modules");
    static const char *const def[2] = {"q_proj", "v_proj"}; /* PEFT's Llama default */
    bool all = false;
    if (cJSON_IsString(tm)) {
        if (strcmp(tm->valuestring, "all-linear"))
            return QT_ERROR(QT_ENOTSUP, "%s: target_modules is the regular expression \"%s\"; "
                                        "qtrain reads a list of module names or \"all-linear\"",
                            path, tm->valuestring);
        all = true;
    } else if (tm && !cJSON_IsNull(tm) && !cJSON_IsArray(tm)) {
        return QT_ERROR(QT_EFORMAT, "%s: target_modules must be a list of names or a string",
                        path);
    }
    for (const cJSON *e = tm && cJSON_IsArray(tm) ? tm->child : NULL; e; e = e->next)
        if (!cJSON_IsString(e) || !*e->valuestring)
            return QT_ERROR(QT_EFORMAT, "%s: target_modules entries must be non-empty strings",
                            path);
    if (!unset(ex) && !cJSON_IsArray(ex))
        return QT_ERROR(QT_ENOTSUP, "%s: exclude_modules as a regular expression is not "
                                    "supported; use a list", path);
    if (cJSON_IsArray(tm) && !tm->child)
        return QT_ERROR(QT_EINVAL, "%s: target_modules is an empty list", path);

    int n_layers = m->llama.cfg.n_layers;
    c->mod = calloc((size_t)n_layers * 7 + 1, sizeof *c->mod);
    if (!c->mod) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    int n_entries = cJSON_IsArray(tm) ? cJSON_GetArraySize(tm) : 2;
    bool *hit = calloc((size_t)n_entries + 1, sizeof *hit);
    if (!hit) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    for (int li = 0; li < n_layers; li++)
        for (int k = 0; k < 7; k++) {
            char module[128];
            snprintf(module, sizeof module, "model.layers.%d.%s", li, LINEAR_NAMES[k]);
            bool sel = all;
            int e = 0;
            if (cJSON_IsArray(tm)) {
                for (const cJSON *v = tm->child; v; v = v->next, e++)
                    if (peft_matches(v->valuestring, module)) sel = hit[e] = true;
            } else if (!all) {
                for (e = 0; e < 2; e++)
                    if (peft_matches(def[e], module)) sel = hit[e] = true;
            }
            for (const cJSON *v = cJSON_IsArray(ex) ? ex->child : NULL; sel && v; v = v->next)
                if (cJSON_IsString(v) && peft_matches(v->valuestring, module)) sel = false;
            if (sel) snprintf(c->mod[c->n_mod++], sizeof c->mod[0], "%s", module);
        }
    qt_status s = QT_OK;
    int e = 0;
    for (const cJSON *v = cJSON_IsArray(tm) ? tm->child : NULL; v && s == QT_OK; v = v->next, e++)
        if (!hit[e])
            s = QT_ERROR(!strcmp(short_of(v->valuestring), "lm_head") ? QT_ENOTSUP : QT_EINVAL,
                         "%s: target_modules entry \"%s\" matches no decoder Linear layer of the "
                         "model (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)",
                         path, v->valuestring);
    free(hit);
    if (s == QT_OK && !c->n_mod)
        s = QT_ERROR(QT_EINVAL, "%s: target_modules selects no layer", path);
    if (s == QT_OK) s = compact_targets(c, path, n_layers);
    return s;
}

static qt_status parse_config(peft_cfg *c, const qt_model *m, const char *path);

static qt_status read_config(peft_cfg *c, const qt_model *m, const char *dir) {
    char *path = qt_path_join(dir, PEFT_CONFIG);
    if (!path) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    qt_status s = parse_config(c, m, path);
    free(path);
    return s;
}

static qt_status parse_config(peft_cfg *c, const qt_model *m, const char *path) {
    char *text = NULL;
    qt_status s = qt_read_text_file(path, &text);
    if (s != QT_OK) return s;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j || !cJSON_IsObject(j)) {
        size_t off = j || !end ? 0 : (size_t)(end - text);
        cJSON_Delete(j);
        free(text);
        return QT_ERROR(QT_EFORMAT, "%s: not a JSON object (parse error near byte %zu)", path, off);
    }
    free(text);

    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    double r = 0, alpha = 0, dropout = 0;
    if (!cJSON_IsString(pt))
        s = QT_ERROR(QT_EFORMAT, "%s: \"peft_type\" is missing or not a string", path);
    else if (strcmp(pt->valuestring, "LORA"))
        s = QT_ERROR(QT_ENOTSUP, "%s: peft_type is \"%s\"; only \"LORA\" adapters are read", path,
                     pt->valuestring);
    /* PEFT's LoraConfig defaults: r 8, lora_alpha 8, lora_dropout 0 */
    if (s == QT_OK) s = get_num(j, path, "r", 8, &r);
    if (s == QT_OK && !(r >= 1 && r <= 65536 && r == floor(r)))
        s = QT_ERROR(QT_EINVAL, "%s: \"r\" must be a positive integer, got %g", path, r);
    if (s == QT_OK) s = get_num(j, path, "lora_alpha", 8, &alpha);
    if (s == QT_OK && !(alpha > 0))
        s = QT_ERROR(QT_EINVAL, "%s: \"lora_alpha\" must be > 0, got %g", path, alpha);
    if (s == QT_OK) s = get_num(j, path, "lora_dropout", 0, &dropout);
    if (s == QT_OK && !(dropout >= 0 && dropout < 1))
        s = QT_ERROR(QT_EINVAL, "%s: \"lora_dropout\" must be in [0, 1), got %g", path, dropout);
    if (s == QT_OK) s = get_bool(j, path, "use_rslora", &c->rslora);

    /* what qt_lora does not compute: refused by name, never silently dropped */
    static const char *const unsupported[] = {"use_dora", "rank_pattern", "alpha_pattern",
                                              "layers_to_transform", "modules_to_save",
                                              "lora_bias", "trainable_token_indices",
                                              "layer_replication", "target_parameters"};
    for (size_t i = 0; s == QT_OK && i < sizeof unsupported / sizeof *unsupported; i++)
        if (!unset(cJSON_GetObjectItemCaseSensitive(j, unsupported[i])))
            s = QT_ERROR(QT_ENOTSUP, "%s: \"%s\" is set; qtrain's LoRA does not implement it",
                         path, unsupported[i]);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(j, "bias");
    if (s == QT_OK && !unset(bias) && !(cJSON_IsString(bias) && !strcmp(bias->valuestring, "none")))
        s = QT_ERROR(QT_ENOTSUP, "%s: \"bias\" must be \"none\" (trained biases are not "
                                 "supported)", path);
    bool fifo = false;
    if (s == QT_OK) s = get_bool(j, path, "fan_in_fan_out", &fifo);
    if (s == QT_OK && fifo)
        s = QT_ERROR(QT_ENOTSUP, "%s: \"fan_in_fan_out\" is true (Conv1D models); Llama "
                                 "layers are nn.Linear", path);
    if (s == QT_OK) s = select_modules(c, m, j, path);
    cJSON_Delete(j);
    c->r = (int)r;
    c->alpha = (float)alpha;
    c->dropout = (float)dropout;
    return s;
}

static int find_module(const qt_lora *l, const char *module, size_t len) {
    for (int i = 0; i < l->n; i++)
        if (strlen(l->layers[i].module) == len && !strncmp(l->layers[i].module, module, len))
            return i;
    return -1;
}

static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* Copies tensor t (F32, F16 or BF16, any alignment) into parameter p. */
static qt_status put(qt_paramset *ps, qt_tensor *p, const qt_st_tensor *t, const char *path) {
    size_t n = (size_t)qt_numel(p);
    float *v = malloc(n * sizeof *v + 1);
    if (!v) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    const unsigned char *src = t->data;
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == QT_F32) {
            memcpy(&v[i], src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            v[i] = t->dtype == QT_BF16 ? qt_bf16_to_f32(h) : qt_f16_to_f32(h);
        }
    }
    qt_status s = qt_device_copy(p->device, p->data, (qt_device){QT_DEV_CPU, 0}, v, n * sizeof *v);
    if (s == QT_OK && ps->ddata) { /* keep the host copy current too */
        for (int i = 0; i < ps->n; i++)
            if (ps->params[i] == p) memcpy(ps->data + ps->offset[i], v, n * sizeof *v);
    }
    if (s != QT_OK) s = QT_ERROR(s, "%s: copying %s: %s", path, t->name, qt_error_message());
    free(v);
    return s;
}

static qt_status read_weights_file(qt_lora *l, const char *path);

static qt_status read_weights(qt_lora *l, const char *dir) {
    char *path = qt_path_join(dir, PEFT_WEIGHTS);
    if (!path) return QT_ERROR(QT_ENOMEM, "lora: out of memory");
    qt_status s = read_weights_file(l, path);
    free(path);
    return s;
}

static qt_status read_weights_file(qt_lora *l, const char *path) {
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    if (s != QT_OK) return s;
    const size_t pl = strlen(PEFT_PREFIX);
    bool *have = calloc((size_t)(2 * l->n + 1), sizeof *have);
    if (!have) s = QT_ERROR(QT_ENOMEM, "lora: out of memory");
    for (int i = 0; s == QT_OK && i < qt_safetensors_count(st); i++) {
        const qt_st_tensor *t = qt_safetensors_at(st, i);
        const char *nm = t->name;
        /* base_model.model.<module>.lora_{A,B}[.<adapter>].weight */
        const char *ab = strstr(nm, ".lora_A.");
        if (!ab) ab = strstr(nm, ".lora_B.");
        size_t n = strlen(nm);
        const char *tail = ab ? ab + 8 : NULL;
        const char *dot = tail ? strchr(tail, '.') : NULL;
        bool name_ok = ab && !strncmp(nm, PEFT_PREFIX, pl) && n > 7 &&
                       !strcmp(nm + n - 7, ".weight") &&
                       (!strcmp(tail, "weight") || (dot && !strcmp(dot, ".weight") && dot > tail));
        if (!name_ok) {
            s = QT_ERROR(QT_EINVAL, "%s: tensor %s is not a LoRA weight (expected "
                                    PEFT_PREFIX "<module>.lora_A.weight / .lora_B.weight)",
                         path, nm);
            break;
        }
        int k = find_module(l, nm + pl, (size_t)(ab - nm - pl));
        if (k < 0) {
            s = QT_ERROR(QT_EINVAL, "%s: tensor %s is for module %.*s, which the adapter config "
                                    "does not select (or the model does not have)",
                         path, nm, (int)(ab - nm - pl), nm + pl);
            break;
        }
        bool is_b = ab[6] == 'B';
        qt_tensor *p = is_b ? l->layers[k].b : l->layers[k].a;
        char got[96], want[96];
        if (have[2 * k + is_b]) {
            s = QT_ERROR(QT_EINVAL, "%s: tensor %s: a second lora_%c for %s", path, nm,
                         is_b ? 'B' : 'A', l->layers[k].module);
        } else if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
            s = QT_ERROR(QT_EINVAL, "%s: tensor %s has shape %s, expected %s = %s with r = %d", path,
                         nm, shape_str(t->shape, t->ndim, got, sizeof got),
                         shape_str(p->shape, p->ndim, want, sizeof want),
                         is_b ? "(out, r)" : "(r, in)", l->cfg.rank);
        } else if (t->dtype != QT_F32 && t->dtype != QT_F16 && t->dtype != QT_BF16) {
            s = QT_ERROR(QT_EDTYPE, "%s: tensor %s is %s; expected F32, F16 or BF16", path, nm,
                         qt_dtype_name(t->dtype));
        } else {
            s = put(&l->params, p, t, path);
            have[2 * k + is_b] = true;
        }
    }
    for (int i = 0; s == QT_OK && i < 2 * l->n; i++)
        if (!have[i])
            s = QT_ERROR(QT_EINVAL, "%s: no tensor " PEFT_PREFIX "%s.lora_%c.weight for an "
                                    "adapted module", path, l->layers[i / 2].module,
                         i % 2 ? 'B' : 'A');
    free(have);
    qt_safetensors_close(st);
    return s;
}

qt_status qt_lora_load_peft(qt_lora **out, qt_model *m, const char *dir, bool nf4) {
    if (!out || !m || !dir) return QT_ERROR(QT_EINVAL, "lora load: NULL argument");
    *out = NULL;
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "lora load %s: only Llama-family models", dir);
    peft_cfg c;
    memset(&c, 0, sizeof c);
    qt_status s = read_config(&c, m, dir);
    qt_lora *l = NULL;
    if (s == QT_OK) {
        const char *tp[QT_LORA_MAX_TARGETS];
        for (int i = 0; i < c.n_targets; i++) tp[i] = c.targets[i];
        qt_lora_config lc = {.rank = c.r, .alpha = c.alpha, .rslora = c.rslora,
                             .dropout = c.dropout, .targets = tp, .n_targets = c.n_targets,
                             .nf4 = nf4, .nf4_blocksize = 0, .seed = 0};
        s = qt_lora_attach(&l, m, &lc);
        if (s != QT_OK) s = QT_ERROR(s, "%s/" PEFT_CONFIG ": %s", dir, qt_error_message());
    }
    /* attach selected what PEFT would: the same modules, in the same order */
    if (s == QT_OK && l->n != c.n_mod)
        s = QT_ERROR(QT_ESTATE, "lora load %s: attach selected %d modules, the config %d", dir,
                     l->n, c.n_mod);
    for (int i = 0; s == QT_OK && i < l->n; i++)
        if (strcmp(l->layers[i].module, c.mod[i]))
            s = QT_ERROR(QT_ESTATE, "lora load %s: attach selected %s, the config %s", dir,
                         l->layers[i].module, c.mod[i]);
    if (s == QT_OK) s = read_weights(l, dir);
    free(c.mod);
    if (s != QT_OK) {
        qt_lora_free(l);
        return s;
    }
    *out = l;
    return QT_OK;
}
