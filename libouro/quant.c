/*
 * quant.c - q8_0 weights: blocks of 32 int8 along a row with one F16
 * scale each (34 bytes per 32 weights, against 64 in BF16).
 *
 * A block's scale is max|w| / 127 rounded to F16, and each weight is
 * round(w / scale), so the largest weight of a block maps to +-127 and
 * the error of any weight is at most half a scale. Quantized matrices are
 * stored under their Hugging Face name with the suffixes .q8_0 (I8 [out,
 * in]) and .q8_0_scale (F16 [out, in/32]) in an otherwise unchanged
 * safetensors file, which ouro_model_load recognises.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Quantizes n floats (n a multiple of 32) into q [n] and scale [n/32]. */
static void quantize(const float *w, int64_t n, int8_t *q, uint16_t *scale)
{
	for (int64_t b = 0; b < n / OURO_Q8_BLOCK; b++) {
		const float *x = w + b * OURO_Q8_BLOCK;
		float amax = 0, d;

		for (int i = 0; i < OURO_Q8_BLOCK; i++)
			amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
		ouro_from_f32(&scale[b], &(float){amax / 127.0f}, OURO_F16, 1);
		ouro_to_f32(&d, &scale[b], OURO_F16, 1);  /* quantize with the stored scale */
		for (int i = 0; i < OURO_Q8_BLOCK; i++) {
			long v = d > 0 ? lrintf(x[i] / d) : 0;
			q[b * OURO_Q8_BLOCK + i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
		}
	}
}

/* The weight of m stored as tensor t, if it is a matrix worth quantizing:
 * a layer's projections, and lm_head unless it is the embedding. */
static const struct ouro_weight *matrix_of(const struct ouro_model *m, const struct ouro_tensor *t)
{
	if (!m->cfg.tie_word_embeddings && m->lm_head.t == t)
		return &m->lm_head;
	for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
		const struct ouro_weight *ws[] = {&m->layers[l].wq, &m->layers[l].wk, &m->layers[l].wv,
						  &m->layers[l].wo, &m->layers[l].wgate, &m->layers[l].wup,
						  &m->layers[l].wdown};
		for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
			if (ws[i]->t == t)
				return ws[i];
	}
	return NULL;
}

int ouro_model_quantize(const struct ouro_model *m, FILE *out, const char *what)
{
	struct ouro_record *r = ouro_record_new();
	void **bufs = NULL;
	char **names = NULL;
	int nbufs = 0, cap = 0, rc = OURO_OK;
	float *row = NULL;

	if (!r)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if ((rc = ouro_record_meta(r, "format", "pt")) ||
	    (rc = ouro_record_meta(r, "ouro.quantization", "q8_0")))
		goto out;
	for (int f = 0; f < m->nmaps && !rc; f++)
		for (int i = 0; i < ouro_st_count(m->maps[f].st) && !rc; i++) {
			const struct ouro_tensor *t = ouro_st_tensor(m->maps[f].st, i);
			const struct ouro_weight *w = matrix_of(m, t);

			if (!w || w->scale || w->in % OURO_Q8_BLOCK) {   /* kept as it is */
				rc = ouro_record_add(r, t->name, t->dtype, t->ndim, t->shape, t->data);
				continue;
			}
			if (nbufs + 4 > cap) {
				cap = 2 * cap + 16;
				void *p = realloc(bufs, (size_t)cap * sizeof *bufs);
				void *s = p ? realloc(names, (size_t)cap * sizeof *names) : NULL;
				if (p)
					bufs = p;
				if (s)
					names = s;
				if (!p || !s) {
					rc = ouro_fail(OURO_ENOMEM, "out of memory");
					break;
				}
			}
			size_t n = (size_t)(w->out * w->in);
			int8_t *q = malloc(n);
			uint16_t *sc = malloc(n / OURO_Q8_BLOCK * sizeof *sc);
			size_t len = strlen(t->name) + 16;
			char *qn = malloc(len), *sn = malloc(len);
			bufs[nbufs] = q;
			bufs[nbufs + 1] = sc;
			names[nbufs] = qn;
			names[nbufs + 1] = sn;
			nbufs += 2;
			if (!row)
				row = malloc((size_t)OURO_CHUNK * (size_t)w->in * sizeof *row);
			else
				row = realloc(row, (size_t)OURO_CHUNK * (size_t)w->in * sizeof *row);
			if (!q || !sc || !qn || !sn || !row) {
				rc = ouro_fail(OURO_ENOMEM, "%s: out of memory quantizing %s", what, t->name);
				break;
			}
			for (int64_t r0 = 0; r0 < w->out; r0 += OURO_CHUNK) {
				int64_t rows = w->out - r0 < OURO_CHUNK ? w->out - r0 : OURO_CHUNK;
				ouro_weight_rows(row, w, r0, rows);
				quantize(row, rows * w->in, q + r0 * w->in, sc + r0 * w->in / OURO_Q8_BLOCK);
			}
			snprintf(qn, len, "%s.q8_0", t->name);
			snprintf(sn, len, "%s.q8_0_scale", t->name);
			int64_t qshape[2] = {w->out, w->in}, sshape[2] = {w->out, w->in / OURO_Q8_BLOCK};
			if (!(rc = ouro_record_add(r, qn, OURO_I8, 2, qshape, q)))
				rc = ouro_record_add(r, sn, OURO_F16, 2, sshape, sc);
		}
	if (!rc)
		rc = ouro_record_write(r, out, what);
out:
	for (int i = 0; i < nbufs; i++) {
		free(bufs[i]);
		free(names[i]);
	}
	free(bufs);
	free(names);
	free(row);
	ouro_record_free(r);
	return rc;
}
