/*
 * model.c - loads an unmodified Hugging Face Ouro checkpoint directory.
 *
 * config.json gives the shapes; the weights come from model.safetensors,
 * or from the shards that model.safetensors.index.json names. Files are
 * mapped read-only and the large matrices are used in place, in their
 * stored dtype (BF16, F16 or F32, or q8_0 or q4 as ouro-quantize writes
 * them); only the small vectors (norm weights, the exit gate) are
 * converted to float. With OURO_LOAD=read the files are read into
 * anonymous memory instead and used the same way. Every
 * tensor the forward pass uses is looked up by its Hugging Face name and
 * its shape checked.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#ifndef OURO_DEFAULT_MODEL
#define OURO_DEFAULT_MODEL "/usr/local/share/ouro/models/ouro-kjv-tiny"
#endif

const char *ouro_model_path(const char *dir)
{
	const char *env = getenv("OURO_MODEL");

	if (dir)
		return dir;
	if (env && *env)
		return env;
	return OURO_DEFAULT_MODEL;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);

	if (p) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + 1, name, b + 1);
	}
	return p;
}

/* How the weight files are held, from OURO_LOAD: mapped (the default,
 * "map") or read into anonymous memory ("read"). */
static int read_in(int *read)
{
	const char *mode = getenv("OURO_LOAD");

	*read = 0;
	if (!mode || !*mode || strcmp(mode, "map") == 0)
		return OURO_OK;
	if (strcmp(mode, "read") == 0) {
		*read = 1;
		return OURO_OK;
	}
	return ouro_fail(OURO_EUSAGE, "OURO_LOAD: '%s' is neither map nor read", mode);
}

/* Reads the len bytes of fd (the file path) into new anonymous memory at
 * *addr, made read-only afterwards like a mapping; fails up front when
 * the file is larger than this machine's memory. */
static int read_file(void **addr, int fd, size_t len, const char *path)
{
	uint64_t phys = ouro_phys_bytes();
	unsigned char *p;
	size_t got = 0;

	if (phys && len > phys)
		return ouro_fail(OURO_ENOMEM, "%s: reading it in needs %.1f MiB, more than this machine's %.1f MiB of memory",
				 path, (double)len / (1 << 20), (double)phys / (1 << 20));
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return ouro_fail(OURO_ENOMEM, "%s: reading it in needs %.1f MiB, which is not available",
				 path, (double)len / (1 << 20));
	madvise(p, len, MADV_HUGEPAGE);
	while (got < len) {
		ssize_t r = pread(fd, p + got, len - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			munmap(p, len);
			if (r == 0)
				return ouro_fail(OURO_EMODEL, "%s: shorter than its size (changed while being read)", path);
			return ouro_fail(OURO_ESYS, "%s: %s", path, strerror(errno));
		}
		got += (size_t)r;
	}
	mprotect(p, len, PROT_READ);
	*addr = p;
	return OURO_OK;
}

/* Maps (or reads in) path and parses its safetensors header into
 * m->maps[m->nmaps]. */
static int map_file(struct ouro_model *m, const char *path)
{
	struct ouro_mapping *mp = &m->maps[m->nmaps];
	uint64_t used, size;
	FILE *f;
	int fd, rc, read;

	memset(mp, 0, sizeof *mp);
	if (!(mp->path = strdup(path)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	m->nmaps++;
	if ((rc = read_in(&read)))
		return rc;
	if ((rc = ouro_file_open(&f, &size, path, OURO_EMODEL)))
		return rc;
	fd = fileno(f);
	mp->len = (size_t)size;
	if (mp->len && read) {
		rc = read_file(&mp->addr, fd, mp->len, path);
		if (rc) {
			fclose(f);
			return rc;
		}
	} else if (mp->len) {
		mp->addr = mmap(NULL, mp->len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (mp->addr == MAP_FAILED) {
			mp->addr = NULL;
			fclose(f);
			return ouro_fail(OURO_ESYS, "%s: cannot map: %s", path, strerror(errno));
		}
		madvise(mp->addr, mp->len, MADV_HUGEPAGE);
	}
	fclose(f);
	rc = ouro_st_parse(&mp->st, path, mp->addr, mp->len, &used);
	if (rc == OURO_EINPUT)
		rc = OURO_EMODEL;
	return rc;
}

/* Maps the shards listed in model.safetensors.index.json. */
static int map_shards(struct ouro_model *m, const char *index)
{
	json_error_t jerr;
	json_t *root, *wm, *v;
	const char *key;
	FILE *f;
	int rc;

	if ((rc = ouro_file_open(&f, NULL, index, OURO_EMODEL)))
		return rc;
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root)
		return ouro_fail(OURO_EMODEL, "%s:%d: %s", index, jerr.line, jerr.text);
	wm = json_object_get(root, "weight_map");
	if (!json_is_object(wm)) {
		json_decref(root);
		return ouro_fail(OURO_EMODEL, "%s: weight_map is missing or not an object", index);
	}
	json_object_foreach(wm, key, v) {
		const char *file = json_string_value(v);
		int seen = 0;

		if (!file || !*file || strchr(file, '/') || strcmp(file, "..") == 0) {
			rc = ouro_fail(OURO_EMODEL, "%s: weight_map entry for %s is not a file name in the model directory",
				       index, key);
			break;
		}
		for (int i = 0; i < m->nmaps && !seen; i++)
			seen = strcmp(strrchr(m->maps[i].path, '/') + 1, file) == 0;
		if (seen)
			continue;
		char *path = join(m->dir, file);
		void *p = realloc(m->maps, (size_t)(m->nmaps + 1) * sizeof *m->maps);
		if (!path || !p) {
			free(path);
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			break;
		}
		m->maps = p;
		rc = map_file(m, path);
		free(path);
		if (rc)
			break;
	}
	json_decref(root);
	return rc;
}

/* The tensor called name in any mapped file, or NULL; *file its file. */
static const struct ouro_tensor *lookup(struct ouro_model *m, const char *name, const char **file)
{
	for (int i = 0; i < m->nmaps; i++) {
		const struct ouro_tensor *t = ouro_st_find(m->maps[i].st, name);
		if (t) {
			*file = m->maps[i].path;
			return t;
		}
	}
	return NULL;
}

/* Finds a tensor by name, of dtype `dtype` (or any float dtype if -1),
 * and checks its shape. */
static int find_typed(struct ouro_model *m, const struct ouro_tensor **out, const char *name,
		      int dtype, int ndim, int64_t d0, int64_t d1)
{
	const char *file = NULL;
	const struct ouro_tensor *t = lookup(m, name, &file);
	int64_t want[2] = {d0, d1};

	if (!t)
		return ouro_fail(OURO_EMODEL, "%s: tensor %s is missing", m->dir, name);
	if (dtype < 0 && t->dtype != OURO_F32 && t->dtype != OURO_BF16 && t->dtype != OURO_F16)
		return ouro_fail(OURO_EMODEL, "%s: tensor %s has dtype %s, expected F32, BF16 or F16",
				 file, name, ouro_dtype_name(t->dtype));
	if (dtype >= 0 && t->dtype != (enum ouro_dtype)dtype)
		return ouro_fail(OURO_EMODEL, "%s: tensor %s has dtype %s, expected %s", file, name,
				 ouro_dtype_name(t->dtype), ouro_dtype_name(dtype));
	int ok = t->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = t->shape[i] == want[i];
	if (!ok) {
		char got[160] = "", exp[64];
		size_t len = 0;

		for (int i = 0; i < t->ndim && len < sizeof got - 24; i++)
			len += (size_t)snprintf(got + len, sizeof got - len, "%s%lld", i ? "," : "",
						(long long)t->shape[i]);
		if (ndim == 1)
			snprintf(exp, sizeof exp, "%lld", (long long)d0);
		else
			snprintf(exp, sizeof exp, "%lld,%lld", (long long)d0, (long long)d1);
		return ouro_fail(OURO_EMODEL, "%s: tensor %s has shape [%s], expected [%s]", file, name,
				 got, exp);
	}
	*out = t;
	return OURO_OK;
}

static int find(struct ouro_model *m, const struct ouro_tensor **out, const char *name,
		int ndim, int64_t d0, int64_t d1)
{
	return find_typed(m, out, name, -1, ndim, d0, d1);
}

/* Finds the weight matrix called name, [out, in]: stored as a float tensor
 * of that name, or quantized as name.q8_0 and name.q8_0_scale (q8_0) or
 * name.q4 and name.q4_scale (q4), with every dtype and shape checked. */
static int find_weight(struct ouro_model *m, struct ouro_weight *w, const char *name,
		       int64_t out, int64_t in)
{
	char q[160], sc[176], q4[160], sc4[176];
	const char *file;

	w->out = out;
	w->in = in;
	w->scale = NULL;
	w->q4 = 0;
	snprintf(q, sizeof q, "%s.q8_0", name);
	snprintf(sc, sizeof sc, "%s.q8_0_scale", name);
	snprintf(q4, sizeof q4, "%s.q4", name);
	snprintf(sc4, sizeof sc4, "%s.q4_scale", name);
	if (!lookup(m, name, &file) && !lookup(m, q, &file) && lookup(m, q4, &file)) {
		int64_t nb = ouro_q4_blocks(in);
		w->q4 = 1;
		return find_typed(m, &w->t, q4, OURO_U8, 2, out, nb * OURO_Q4_QBYTES) ||
		       find_typed(m, &w->scale, sc4, OURO_U8, 2, out, nb * OURO_Q4_HBYTES)
			       ? OURO_EMODEL : OURO_OK;
	}
	if (lookup(m, name, &file) || !lookup(m, q, &file))
		return find(m, &w->t, name, 2, out, in);
	if (in % OURO_Q8_BLOCK)
		return ouro_fail(OURO_EMODEL, "%s: tensor %s is q8_0 but its rows of %lld are not a multiple of %d",
				 file, q, (long long)in, OURO_Q8_BLOCK);
	return find_typed(m, &w->t, q, OURO_I8, 2, out, in) ||
	       find_typed(m, &w->scale, sc, OURO_F16, 2, out, in / OURO_Q8_BLOCK)
		       ? OURO_EMODEL : OURO_OK;
}

/* Looks up a vector tensor and converts it to a new float array. */
static int find_vec(struct ouro_model *m, float **out, const char *name, int64_t d)
{
	const struct ouro_tensor *t;
	int rc = find(m, &t, name, 1, d, 0);

	if (rc)
		return rc;
	if (!(*out = malloc((size_t)d * sizeof **out)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	ouro_to_f32(*out, t->data, t->dtype, (size_t)d);
	return OURO_OK;
}

static int load_layer(struct ouro_model *m, int64_t l)
{
	const struct ouro_config *c = &m->cfg;
	struct ouro_layer *L = &m->layers[l];
	int64_t D = c->hidden_size, F = c->intermediate_size;
	int64_t QD = c->num_attention_heads * c->head_dim, KD = c->num_key_value_heads * c->head_dim;
	char name[128];
	int rc;

#define NAME(suffix) (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix), name)
	if ((rc = find_weight(m, &L->wq, NAME("self_attn.q_proj.weight"), QD, D)) ||
	    (rc = find_weight(m, &L->wk, NAME("self_attn.k_proj.weight"), KD, D)) ||
	    (rc = find_weight(m, &L->wv, NAME("self_attn.v_proj.weight"), KD, D)) ||
	    (rc = find_weight(m, &L->wo, NAME("self_attn.o_proj.weight"), D, QD)) ||
	    (rc = find_weight(m, &L->wgate, NAME("mlp.gate_proj.weight"), F, D)) ||
	    (rc = find_weight(m, &L->wup, NAME("mlp.up_proj.weight"), F, D)) ||
	    (rc = find_weight(m, &L->wdown, NAME("mlp.down_proj.weight"), D, F)) ||
	    (rc = find_vec(m, &L->attn_norm, NAME("input_layernorm.weight"), D)) ||
	    (rc = find_vec(m, &L->attn_out_norm, NAME("input_layernorm_2.weight"), D)) ||
	    (rc = find_vec(m, &L->mlp_norm, NAME("post_attention_layernorm.weight"), D)) ||
	    (rc = find_vec(m, &L->mlp_out_norm, NAME("post_attention_layernorm_2.weight"), D)))
		return rc;
#undef NAME
	return OURO_OK;
}

static int load_weights(struct ouro_model *m)
{
	const struct ouro_config *c = &m->cfg;
	const struct ouro_tensor *gw, *gb;
	int rc;

	if ((rc = find(m, &m->embed, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size)))
		return rc;
	if (c->tie_word_embeddings)
		m->lm_head = (struct ouro_weight){m->embed, NULL, c->vocab_size, c->hidden_size, 0};
	else if ((rc = find_weight(m, &m->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size)))
		return rc;
	if (!(m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	for (int64_t l = 0; l < c->num_hidden_layers; l++)
		if ((rc = load_layer(m, l)))
			return rc;
	if ((rc = find_vec(m, &m->final_norm, "model.norm.weight", c->hidden_size)) ||
	    (rc = find(m, &gw, "model.early_exit_gate.weight", 2, 1, c->hidden_size)) ||
	    (rc = find(m, &gb, "model.early_exit_gate.bias", 1, 1, 0)))
		return rc;
	if (!(m->gate_w = malloc((size_t)c->hidden_size * sizeof *m->gate_w)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	ouro_to_f32(m->gate_w, gw->data, gw->dtype, (size_t)c->hidden_size);
	ouro_to_f32(&m->gate_b, gb->data, gb->dtype, 1);
	return OURO_OK;
}

int ouro_model_load(struct ouro_model **out, const char *dir)
{
	struct ouro_model *m;
	struct stat sb;
	char *path = NULL;
	int rc;

	*out = NULL;
	if (stat(dir, &sb) < 0)
		return ouro_fail(OURO_EMODEL, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return ouro_fail(OURO_EMODEL, "%s: not a model directory", dir);
	if (!(m = calloc(1, sizeof *m)) || !(m->dir = strdup(dir))) {
		free(m);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if (!(path = join(dir, "config.json"))) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = ouro_config_load(&m->cfg, path)))
		goto fail;
	free(path);
	if (!(path = join(dir, "model.safetensors"))) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}
	if (access(path, F_OK) == 0) {
		if (!(m->maps = calloc(1, sizeof *m->maps))) {
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			goto fail;
		}
		rc = map_file(m, path);
	} else {
		free(path);
		if (!(path = join(dir, "model.safetensors.index.json"))) {
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			goto fail;
		}
		if (access(path, F_OK) == 0)
			rc = map_shards(m, path);
		else
			rc = ouro_fail(OURO_EMODEL, "%s: no model.safetensors or model.safetensors.index.json",
				       dir);
	}
	if (rc || (rc = load_weights(m)))
		goto fail;
	free(path);
	*out = m;
	return OURO_OK;
fail:
	free(path);
	ouro_model_free(m);
	return rc;
}

void ouro_model_free(struct ouro_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->nmaps; i++) {
		ouro_st_free(m->maps[i].st);
		if (m->maps[i].addr)
			munmap(m->maps[i].addr, m->maps[i].len);
		free(m->maps[i].path);
	}
	free(m->maps);
	if (m->layers)
		for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
			free(m->layers[l].attn_norm);
			free(m->layers[l].attn_out_norm);
			free(m->layers[l].mlp_norm);
			free(m->layers[l].mlp_out_norm);
		}
	free(m->layers);
	free(m->final_norm);
	free(m->gate_w);
	free(m->dir);
	free(m);
}

const struct ouro_config *ouro_model_config(const struct ouro_model *m)
{
	return &m->cfg;
}

const char *ouro_model_dir(const struct ouro_model *m)
{
	return m->dir;
}
