/*
 * engine_internal.h - what the batch engine's files share (engine.c, the
 * engine; spec.c, its speculative decoding): the sequences, the engine,
 * and the engine's steps that speculation reuses.
 */
#ifndef OURO_ENGINE_INTERNAL_H
#define OURO_ENGINE_INTERNAL_H

#include "internal.h"

#define BLOCK_POS 16      /* positions of a full-layout block */

enum seq_state { WAITING, PREFILL, DECODE, GONE };

struct seq {
	int64_t id;
	enum seq_state state;
	struct ouro_seq_opts o;        /* o.stop is `stop` below */
	int32_t *stop;                 /* [o.nstop] */
	struct ouro_sampler *samp;     /* from admission */
	int32_t *ids;                  /* [cap] prompt, then the new tokens */
	int64_t n, P, cap;             /* tokens so far, of the prompt, at most */
	int64_t made;                  /* new tokens */
	int64_t need;                  /* blocks reserved at admission */
	void **pblk, **dblk;           /* full-layout, shared-layout blocks */
	int64_t npblk, ndblk;
	/* the work item */
	int64_t p0, rows;              /* positions p0..p0+rows-1; rows 0: none */
	int t;                         /* its loop */
	float *h;                      /* [chunk, D] its rows' states between passes */
	/* the exit decision of the position being decoded, or of the prompt's last */
	struct ouro_exit_state ex;
	int decided, exit_t;
	float *hprev, *hmix, *hout;    /* [D] each */
	float *lm;                     /* [2, V] lm_head of loops t and t-1 by
					* parity, for rules that read it; else NULL */
	float *kacc, *vacc;            /* [N, KD] sums over loops (mean) */
	struct spec *sp;               /* speculative decoding (spec.c), or NULL */
};

struct ouro_engine {
	struct ouro_model *m;
	struct ouro_engine_opts o;
	struct ouro_gate own_gate;     /* the model's, unless opts give one */
	const struct ouro_gate *gate;
	int T;
	int64_t N, D, KD, V, hd, H;
	int64_t slots;                 /* T*N */
	size_t esize;                  /* bytes of a cached element */
	struct ouro_kvpool pool;
	struct seq **seqs;             /* [nseqs] in arrival order, not yet gone */
	int64_t nseqs, seqs_cap, next_id;
	int running;
	int64_t rmax;                  /* rows of one pass at most */
	int64_t hrows;                 /* rows of a sequence's item at most */
	struct ouro_fwd_buf b;         /* [rmax] rows */
	struct seq **item;             /* [max_seqs] the items of the pass */
	int nitems;
	struct seq **row_seq;          /* [rmax] the sequence of each row */
	int64_t *row_pos;              /* [rmax] its position */
	uint16_t *kvtmp;               /* [rmax, KD] bf16 rounding */
	float *scores;                 /* [threads, ouro_scores_floats(scores_len, hd)] */
	int64_t scores_len;            /* positions the scratch is sized for */
	struct ouro_kv_run *runs;      /* [threads, runs_len] */
	int64_t runs_len;
	struct seq **blk_seq;          /* [rmax] query blocks: a sequence's rows */
	int64_t *blk_row, *blk_m;      /* [rmax] their first row and count */
	int64_t nblk;
	int64_t nexit_max;             /* max_seqs times the most rows deciding in an item */
	float *hexit;                  /* [nexit_max, D] states that exit, or decide by logits */
	float *logits;                 /* [nexit_max, V] */
	float **lmdst;                 /* [nexit_max] where exit_logits puts each row's */
	float *wbuf;                   /* lm_head scratch */
	float *kvmean;                 /* [2, KD] a mean's keys and values */
	int64_t rows;                  /* rows of the pass */
	struct ouro_engine_event *ev;
	int nev, ev_cap;
	struct ouro_engine_stats st;
};

/* ---- engine.c ---- */

/* Feeds the state h [D] after loop s->t of the position s decides on to
 * its exit rule. */
void ouro_eng_exit_feed(struct ouro_engine *e, struct seq *s, const float *h);
/* The cache of a decoded position pos that exited at s->exit_t. */
int ouro_eng_exit_cache(struct ouro_engine *e, struct seq *s, int64_t pos);
/* Reports s's next token, sampled from state h. */
int ouro_eng_advance(struct ouro_engine *e, struct seq *s, int32_t next, const float *h);
/* A new position of s enters at loop 0. */
void ouro_eng_position_begin(struct ouro_engine *e, struct seq *s);
int ouro_eng_is_stop(const struct seq *s, int32_t id);

/* ---- spec.c: speculative decoding ----
 * A sequence decodes speculatively (s->sp) under --kv full when the
 * engine's opts ask for it; see spec.c. */

struct spec_row {
	struct ouro_exit_state ex;     /* the position's exit decision */
	int decided, exit_t, live;     /* live: computing loops in the verify item */
	float *hprev, *hmix, *hout;    /* [D] each, swapped with the seq's */
	float *lm;                     /* [2, V] as the seq's lm (NULL when it has none), swapped too */
	float *h;                      /* [D] its state after its last loop */
	float *logits;                 /* [V] from hout, or NULL before lm_head */
	int32_t draft;                 /* the token drafted from it, or -1 */
	int from_q;                    /* drawn from q (sampled) */
};

struct spec {
	int S, K;         /* draft loops, most positions a round */
	int k;            /* positions of this round at most (adaptive) */
	int verify;       /* 0: drafting, 1: verifying */
	int64_t a;        /* the round's first position */
	int n;            /* positions drafted so far this round */
	int live;         /* rows still running loops in the verify item */
	float *hx, *lx;   /* [K, D], [K, V]: lm_head of the rows after verifying */
	float *dl;        /* [K, V] logits of the draft loops */
	float *own;       /* the seq's own hout (see swap_row) */
	double *q, *p;    /* sampled: [K, V] the drafts' distributions, [V] scratch */
	float *lmblk;     /* [K, 2, V] the rows' lm buffers, for rules reading logits */
	struct spec_row row[];   /* [K] */
};

/* Whether sequence s decodes speculatively. */
int ouro_spec_wanted(const struct ouro_engine *e, const struct seq *s);
int ouro_spec_new(struct ouro_engine *e, struct seq *s);
void ouro_spec_free(struct seq *s);
/* After a pass that ran s's decoding item with states h [rows, D]: the
 * draft or verify step; *out set when the round is ready for
 * ouro_spec_accept (after the pass's lm_head of other sequences). */
int ouro_spec_pass_done(struct ouro_engine *e, struct seq *s, const float *h, int *out);
int ouro_spec_accept(struct ouro_engine *e, struct seq *s);
/* The lm buffer [2, V] (see struct seq) of row j of s's verify item, or
 * NULL when that row takes no exit decision in this pass. */
float *ouro_spec_lm_row(const struct seq *s, int64_t j);

/* Whether position pos of s keeps its cached keys and values this pass:
 * a verify row whose position has exited must keep the copies of its
 * exit loop in the later loops' slots. */
static inline int ouro_spec_frozen(const struct seq *s, int64_t pos)
{
	return s->sp && s->sp->verify && !s->sp->row[pos - s->sp->a].live;
}

#endif
