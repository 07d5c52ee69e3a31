/*
 * internal.h - what the library's modules share and programs never see:
 * the loaded model's weight views and the numerical kernels.
 */
#ifndef OURO_INTERNAL_H
#define OURO_INTERNAL_H

#include "ouro.h"

/* One decoder layer's weights; matrices are views in the stored dtype,
 * PyTorch Linear layout [out, in]; norm weights converted to float. */
struct ouro_layer {
	const struct ouro_tensor *wq;     /* [H*hd, D] */
	const struct ouro_tensor *wk;     /* [KV*hd, D] */
	const struct ouro_tensor *wv;     /* [KV*hd, D] */
	const struct ouro_tensor *wo;     /* [D, H*hd] */
	const struct ouro_tensor *wgate;  /* [F, D] */
	const struct ouro_tensor *wup;    /* [F, D] */
	const struct ouro_tensor *wdown;  /* [D, F] */
	float *attn_norm;                 /* [D] input_layernorm */
	float *attn_out_norm;             /* [D] input_layernorm_2 */
	float *mlp_norm;                  /* [D] post_attention_layernorm */
	float *mlp_out_norm;              /* [D] post_attention_layernorm_2 */
};

struct ouro_mapping {
	char *path;
	void *addr;
	size_t len;
	struct ouro_st *st;
};

struct ouro_model {
	char *dir;
	struct ouro_config cfg;
	int nmaps;
	struct ouro_mapping *maps;        /* [nmaps] mapped safetensors files */
	const struct ouro_tensor *embed;  /* [V, D] */
	const struct ouro_tensor *lm_head;/* [V, D]; the embedding when tied */
	struct ouro_layer *layers;        /* [N] */
	float *final_norm;                /* [D] model.norm */
	float *gate_w;                    /* [D] early_exit_gate.weight */
	float gate_b;                     /* early_exit_gate.bias */
};

/* Size of the scratch buffer that ouro_matmul widens weights into: at
 * most this many floats, and never less than one row. */
#define OURO_WBUF_FLOATS ((int64_t)1 << 22)
#define OURO_WBUF_SIZE(in) ((in) > OURO_WBUF_FLOATS ? (in) : OURO_WBUF_FLOATS)

/* y[n, out] = x[n, in] * W^T for W [out, in] in any float dtype; wbuf is
 * scratch of OURO_WBUF_SIZE(in) floats. */
void ouro_matmul(float *y, const float *x, const struct ouro_tensor *w,
		 int64_t n, float *wbuf);
/* y[n, D] = x / rms(x) * weight, row by row; y may equal x. */
void ouro_rmsnorm(float *y, const float *x, const float *weight, int64_t n,
		  int64_t d, float eps);

#endif
