/*
 * hf_pretok.c - the pre-tokenizers of a tokenizer.json (Digits,
 * ByteLevel with the GPT-2 pattern, Split with a regex and a behaviour,
 * WhitespaceSplit, Metaspace, and Sequences of them): reading them and
 * splitting a stretch of text into the pieces BPE works on.
 *
 * The GPT-2 pattern is matched by hand (tok_class) instead of by a regex
 * engine; Split patterns go to PCRE2 (hf_load.c).
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

/* ---- scratch ------------------------------------------------------------ */

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_block *b = a->head;

	if (!b || b->cap - b->n < n) {
		size_t cap = n > 65536 ? n : 65536;
		b = malloc(sizeof *b + cap);
		if (!b)
			return NULL;
		b->n = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->d + b->n;
	b->n += n;
	return p;
}

void tok_hf_arena_reset(struct arena *a)
{
	/* keep the newest block, free the rest */
	if (!a->head)
		return;
	struct arena_block *b = a->head->next;
	while (b) {
		struct arena_block *nx = b->next;
		free(b);
		b = nx;
	}
	a->head->next = NULL;
	a->head->n = 0;
}

void tok_hf_arena_free(struct arena *a)
{
	tok_hf_arena_reset(a);
	free(a->head);
	a->head = NULL;
}

static int pv_push(struct piecevec *v, const char *p, size_t n, int at_start)
{
	if (n == 0)
		return OURO_OK;
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 1024;
		void *q = realloc(v->v, cap * sizeof *v->v);
		if (!q)
			return ouro_fail(OURO_ENOMEM, "out of memory splitting text");
		v->v = q;
		v->cap = cap;
	}
	v->v[v->n].p = p;
	v->v[v->n].n = n;
	v->v[v->n].at_start = at_start;
	v->n++;
	return OURO_OK;
}

/* ---- reading ------------------------------------------------------------ */

static int parse_behavior(const char *s, enum hf_behavior *b)
{
	static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious",
				      "MergedWithNext", "Contiguous"};

	for (int i = 0; i < 5; i++)
		if (s && !strcmp(s, names[i])) {
			*b = (enum hf_behavior)i;
			return 0;
		}
	return -1;
}

int tok_hf_load_pretokenizer(struct tok_hf *t, json_t *n, const char *what)
{
	const char *type;
	int rc;

	if ((rc = tok_hf_load_component(t, n, what, "pre_tokenizer", "pretokenizers", 1,
					tok_hf_load_pretokenizer, &type)) || !type)
		return rc;
	if (t->byte_level)
		return ouro_fail(OURO_EMODEL, "%s: pre_tokenizer %s after ByteLevel is not supported", what, type);
	void *p = realloc(t->pre, (size_t)(t->npre + 1) * sizeof *t->pre);
	if (!p)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	t->pre = p;
	struct hf_pre *pr = &t->pre[t->npre];
	memset(pr, 0, sizeof *pr);
	t->npre++;
	if (!strcmp(type, "Digits")) {
		pr->type = PRE_DIGITS;
		pr->individual = hf_jbool(n, "individual_digits", 0);
	} else if (!strcmp(type, "ByteLevel")) {
		pr->type = PRE_BYTELEVEL;
		pr->prefix_space = hf_jbool(n, "add_prefix_space", 1);
		pr->use_regex = hf_jbool(n, "use_regex", 1);
		t->byte_level = 1;
	} else if (!strcmp(type, "WhitespaceSplit")) {
		pr->type = PRE_WSSPLIT;
	} else if (!strcmp(type, "Split")) {
		pr->type = PRE_SPLIT;
		if (parse_behavior(hf_jstr(n, "behavior"), &pr->behavior))
			return ouro_fail(OURO_EMODEL, "%s: Split pre_tokenizer with unknown behavior", what);
		pr->invert = hf_jbool(n, "invert", 0);
		if ((rc = tok_hf_load_pattern(json_object_get(n, "pattern"), &pr->re, NULL, NULL, what)))
			return rc;
		pr->md = pcre2_match_data_create_from_pattern(pr->re, NULL);
		if (!pr->md)
			return ouro_fail(OURO_ENOMEM, "out of memory");
	} else if (!strcmp(type, "Metaspace")) {
		const char *r = hf_jstr(n, "replacement");
		const char *scheme = hf_jstr(n, "prepend_scheme");
		pr->type = PRE_METASPACE;
		if (!r || strlen(r) == 0 || strlen(r) > 4 ||
		    tok_utf8_check(r, strlen(r)) != strlen(r))
			return ouro_fail(OURO_EMODEL, "%s: Metaspace replacement must be one character", what);
		pr->repl_len = strlen(r);
		memcpy(pr->repl, r, pr->repl_len);
		if (scheme)
			pr->prepend = !strcmp(scheme, "always") ? 2 : !strcmp(scheme, "first") ? 1 : 0;
		else
			pr->prepend = hf_jbool(n, "add_prefix_space", 1) ? 2 : 0;
		pr->split = hf_jbool(n, "split", 1);
		/* the decoder counterpart, in case the file names none */
		memcpy(t->dec_repl, pr->repl, pr->repl_len);
		t->dec_repl_len = pr->repl_len;
	} else {
		return ouro_fail(OURO_EMODEL, "%s: pre_tokenizer type %s is not supported", what, type);
	}
	return OURO_OK;
}


/* ---- splitting ---------------------------------------------------------- */

/* Splits one piece by the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * matched at each position in that order, as a backtracking engine does. */
static int split_gpt2(struct piecevec *out, const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0;
	int rc = OURO_OK;

	while (i < n && rc == OURO_OK) {
		size_t start = i, j;
		int32_t cp, cp2;
		int l = hf_utf8_at(s + i, n - i, &cp), cls;

		if (cp == '\'' && i + 1 < n) {
			char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
			size_t m = 0;
			if (a == 's' || a == 't' || a == 'm' || a == 'd')
				m = 2;
			else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
				 (a == 'l' && b == 'l'))
				m = 3;
			if (m) {
				rc = pv_push(out, s + i, m, pc->at_start && i == 0);
				i += m;
				continue;
			}
		}
		j = i;
		cls = tok_class(cp);
		if (cp == ' ' && i + 1 < n) {
			int l2 = hf_utf8_at(s + i + 1, n - i - 1, &cp2);
			int c2 = tok_class(cp2);
			if (c2 != TOK_C_SPACE) {
				cls = c2;
				j = i + 1 + (size_t)l2;
				goto run;
			}
		}
		if (cls != TOK_C_SPACE) {
			j = i + (size_t)l;
run:
			while (j < n) {
				int lj = hf_utf8_at(s + j, n - j, &cp2);
				if (tok_class(cp2) != cls)
					break;
				j += (size_t)lj;
			}
		} else {
			/* a run of white space; before a non-space, leave its last
			 * character to go with what follows, unless it is the only one */
			size_t last = i;
			j = i;
			while (j < n) {
				int lj = hf_utf8_at(s + j, n - j, &cp2);
				if (!tok_is_space(cp2))
					break;
				last = j;
				j += (size_t)lj;
			}
			if (j < n && last > i)
				j = last;
		}
		rc = pv_push(out, s + start, j - start, pc->at_start && start == 0);
		i = j;
	}
	return rc;
}

/* Digits: numeric characters (Nd, Nl, No) each alone, or in runs. */
static int split_digits(struct piecevec *out, const struct piece *pc, int individual)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0, start = 0;
	int rc = OURO_OK, prev_num = 0;

	while (i < n && rc == OURO_OK) {
		int32_t cp;
		int l = hf_utf8_at(s + i, n - i, &cp);
		int num = tok_class(cp) == TOK_C_NUMBER;
		if (num && individual) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			if (!rc)
				rc = pv_push(out, s + i, (size_t)l, pc->at_start && i == 0);
			start = i + (size_t)l;
		} else if (i > start && num != prev_num) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			start = i;
		}
		prev_num = num;
		i += (size_t)l;
	}
	return rc ? rc : pv_push(out, s + start, n - start, pc->at_start && start == 0);
}

static int split_ws(struct piecevec *out, const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0, start = 0;
	int rc = OURO_OK;

	while (i < n && rc == OURO_OK) {
		int32_t cp;
		int l = hf_utf8_at(s + i, n - i, &cp);
		if (tok_is_space(cp)) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			start = i + (size_t)l;
		}
		i += (size_t)l;
	}
	return rc ? rc : pv_push(out, s + start, n - start, pc->at_start && start == 0);
}

/* Applies a Split behaviour to the spans [b_k, e_k) with is_match flags. */
struct span { size_t b, e; int m; };

static int split_regex(struct tok_hf *t, struct piecevec *out, struct hf_pre *pr,
		       const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, pos = 0, prev = 0;
	struct span *sp = NULL;
	size_t ns = 0, cap = 0;
	int rc = OURO_OK;

#define ADD_SPAN(B, E, M) do { \
	if (ns == cap) { \
		cap = cap ? cap * 2 : 64; \
		void *q_ = realloc(sp, cap * sizeof *sp); \
		if (!q_) { free(sp); return ouro_fail(OURO_ENOMEM, "out of memory"); } \
		sp = q_; \
	} \
	sp[ns].b = (B); sp[ns].e = (E); sp[ns].m = (M); ns++; \
} while (0)

	while (pos <= n) {
		int r = pcre2_match(pr->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, pr->md, NULL);
		if (r < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(pr->md);
		if (ov[0] > prev)
			ADD_SPAN(prev, ov[0], 0);
		ADD_SPAN(ov[0], ov[1], 1);
		prev = ov[1];
		if (ov[1] == ov[0]) {
			int32_t cp;
			if (ov[1] >= n)
				break;
			pos = ov[1] + (size_t)hf_utf8_at(s + ov[1], n - ov[1], &cp);
		} else {
			pos = ov[1];
		}
	}
	if (prev < n)
		ADD_SPAN(prev, n, 0);
#undef ADD_SPAN
	if (pr->invert)
		for (size_t k = 0; k < ns; k++)
			sp[k].m = !sp[k].m;

	/* merge by behaviour, in place */
	size_t m = 0;
	int prev_match = 0;
	switch (pr->behavior) {
	case BEH_REMOVED:
		for (size_t k = 0; k < ns; k++)
			if (!sp[k].m)
				sp[m++] = sp[k];
		break;
	case BEH_ISOLATED:
		m = ns;
		break;
	case BEH_MERGED_PREV:
		for (size_t k = 0; k < ns; k++) {
			if (sp[k].m && !prev_match && m > 0)
				sp[m - 1].e = sp[k].e;
			else
				sp[m++] = sp[k];
			prev_match = sp[k].m;
		}
		break;
	case BEH_MERGED_NEXT:
		for (size_t k = ns; k-- > 0;) {
			/* built backwards from the end of the array */
			if (sp[k].m && !prev_match && m > 0)
				sp[ns - m].b = sp[k].b;
			else {
				m++;
				sp[ns - m] = sp[k];
			}
			prev_match = sp[k].m;
		}
		memmove(sp, sp + ns - m, m * sizeof *sp);
		break;
	case BEH_CONTIGUOUS:
		for (size_t k = 0; k < ns; k++) {
			if (sp[k].m == prev_match && m > 0)
				sp[m - 1].e = sp[k].e;
			else
				sp[m++] = sp[k];
			prev_match = sp[k].m;
		}
		break;
	}
	for (size_t k = 0; k < m && rc == OURO_OK; k++)
		rc = pv_push(out, s + sp[k].b, sp[k].e - sp[k].b, pc->at_start && sp[k].b == 0);
	free(sp);
	(void)t;
	return rc;
}

static int metaspace(struct tok_hf *t, struct piecevec *out, struct hf_pre *pr,
		     const struct piece *pc)
{
	size_t spaces = 0;
	int add = 0;

	for (size_t i = 0; i < pc->n; i++)
		spaces += pc->p[i] == ' ';
	if (pr->prepend == 2 || (pr->prepend == 1 && pc->at_start))
		add = !(pc->n && (pc->p[0] == ' ' ||
			(pc->n >= pr->repl_len && !memcmp(pc->p, pr->repl, pr->repl_len))));
	size_t len = pc->n + spaces * (pr->repl_len - 1) + (add ? pr->repl_len : 0);
	char *d = arena_alloc(&t->arena, len + 1), *o = d;
	if (!d)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if (add) {
		memcpy(o, pr->repl, pr->repl_len);
		o += pr->repl_len;
	}
	for (size_t i = 0; i < pc->n; i++) {
		if (pc->p[i] == ' ') {
			memcpy(o, pr->repl, pr->repl_len);
			o += pr->repl_len;
		} else {
			*o++ = pc->p[i];
		}
	}
	if (!pr->split)
		return pv_push(out, d, len, pc->at_start);
	/* split before each replacement character (MergedWithNext) */
	size_t start = 0;
	for (size_t i = 0; i + pr->repl_len <= len; i++) {
		if (i > start && !memcmp(d + i, pr->repl, pr->repl_len)) {
			int rc = pv_push(out, d + start, i - start, pc->at_start && start == 0);
			if (rc)
				return rc;
			start = i;
		}
	}
	return pv_push(out, d + start, len - start, pc->at_start && start == 0);
}

int tok_hf_pretokenize(struct tok_hf *t, const char *s, size_t n, int at_start,
		       struct piecevec **res)
{
	int cur = 0, rc = OURO_OK;

	t->pv[0].n = 0;
	if ((rc = pv_push(&t->pv[0], s, n, at_start)))
		return rc;
	for (int k = 0; k < t->npre && rc == OURO_OK; k++) {
		struct hf_pre *pr = &t->pre[k];
		struct piecevec *in = &t->pv[cur], *out = &t->pv[cur ^ 1];
		out->n = 0;
		for (size_t i = 0; i < in->n && rc == OURO_OK; i++) {
			struct piece pc = in->v[i];
			switch (pr->type) {
			case PRE_DIGITS:
				rc = split_digits(out, &pc, pr->individual);
				break;
			case PRE_BYTELEVEL:
				if (pr->prefix_space && pc.p[0] != ' ') {
					char *d = arena_alloc(&t->arena, pc.n + 1);
					if (!d)
						return ouro_fail(OURO_ENOMEM, "out of memory");
					d[0] = ' ';
					memcpy(d + 1, pc.p, pc.n);
					pc.p = d;
					pc.n++;
				}
				rc = pr->use_regex ? split_gpt2(out, &pc) : pv_push(out, pc.p, pc.n, pc.at_start);
				break;
			case PRE_SPLIT:
				rc = split_regex(t, out, pr, &pc);
				break;
			case PRE_WSSPLIT:
				rc = split_ws(out, &pc);
				break;
			case PRE_METASPACE:
				rc = metaspace(t, out, pr, &pc);
				break;
			}
		}
		cur ^= 1;
	}
	*res = &t->pv[cur];
	return rc;
}
