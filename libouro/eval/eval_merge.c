/*
 * eval_merge.c - the merge of the reports of sharded runs (ouro-eval
 * merge): each report checked as one shard of the same run, complete and
 * given once, and the sums added; the merged report is then built from
 * the total as an unsharded run builds its own, so the two agree to the
 * byte.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

/* Checks the shard report j (read from path) as a report of ouro-eval and
 * takes the settings from it when it is the first; *idx gets its shard. */
static int merge_check(struct ouro_eval_merge *g, json_t *j, const char *name, const char *path,
		       int64_t *idx)
{
	json_t *shard = json_object_get(j, "shard"), *tot = json_object_get(j, "examples_total");
	json_t *ji = json_object_get(shard, "index"), *cnt = json_object_get(shard, "count");
	int rc = OURO_OK;

	if (!json_is_object(j) || !json_is_string(json_object_get(j, "format")) ||
	    strcmp(json_string_value(json_object_get(j, "format")), OURO_EVAL_REPORT_FORMAT) ||
	    !json_is_integer(json_object_get(j, "version")) || json_integer_value(json_object_get(j, "version")) != OURO_EVAL_FORMAT_VERSION)
		return ouro_fail(OURO_EINPUT, "%s: not a report of ouro-eval (version %d)", name, OURO_EVAL_FORMAT_VERSION);
	if (!shard)
		return ouro_fail(OURO_EINPUT, "%s: not the report of a --shard run", name);
	if (!json_is_integer(ji) || !json_is_integer(cnt) || json_integer_value(cnt) < 1 ||
	    json_integer_value(ji) < 0 || json_integer_value(ji) >= json_integer_value(cnt) ||
	    json_integer_value(cnt) > (1L << 30) || !json_is_integer(tot) || json_integer_value(tot) < 0)
		return ouro_fail(OURO_EINPUT, "%s: \"shard\" or \"examples_total\" is invalid", name);
	*idx = json_integer_value(ji);
	if (!g->config) {
		g->config = json_incref(json_object_get(j, "config"));
		g->first = path;
		g->count = (long)json_integer_value(cnt);
		g->total = json_integer_value(tot);
		if (g->count > g->nreports)
			return ouro_fail(OURO_EINPUT, "%s: one of %ld shards, but %d report%s given; shards are missing",
					 name, g->count, g->nreports, g->nreports == 1 ? " is" : "s are");
		if ((rc = ouro_eval_config_layout(g->config, &g->L, name)))
			return rc;
		g->seen = calloc((size_t)g->count, sizeof *g->seen);
		g->seen_by = calloc((size_t)g->count, sizeof *g->seen_by);
		g->acc = calloc((size_t)g->L.total, sizeof *g->acc);
		g->v = calloc((size_t)g->L.total, sizeof *g->v);
		if (!g->seen || !g->seen_by || !g->acc || !g->v)
			return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if (g->config != json_object_get(j, "config") && !json_equal(g->config, json_object_get(j, "config")))
		return ouro_fail(OURO_EINPUT, "%s: a run with other settings than %s: config.%s differs",
				 name, ouro_input_name(g->first), ouro_eval_first_difference(json_object_get(j, "config"), g->config));
	if (json_integer_value(cnt) != g->count)
		return ouro_fail(OURO_EINPUT, "%s: shard %lld/%lld, but %s is one of %ld shards", name,
				 (long long)*idx, (long long)json_integer_value(cnt),
				 ouro_input_name(g->first), g->count);
	if (json_integer_value(tot) != g->total)
		return ouro_fail(OURO_EINPUT, "%s: %lld examples in all, %s has %lld", name,
				 (long long)json_integer_value(tot), ouro_input_name(g->first), (long long)g->total);
	if (g->seen[*idx])
		return ouro_fail(OURO_EINPUT, "%s: shard %lld/%ld is also %s", name, (long long)*idx,
				 g->count, ouro_input_name(g->seen_by[*idx]));
	return OURO_OK;
}

int ouro_eval_merge_add(struct ouro_eval_merge *g, const char *path)
{
	const char *name = ouro_input_name(path);
	json_error_t err;
	char *buf;
	size_t len;
	json_t *j;
	int64_t k = 0;
	int rc;

	if ((rc = ouro_eval_slurp(path, &buf, &len)))
		return rc;
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
	free(buf);
	if (!j)
		return ouro_fail(OURO_EINPUT, "%s: line %d: not valid JSON: %s", name, err.line, err.text);
	if (!(rc = merge_check(g, j, name, path, &k)) &&
	    !(rc = ouro_eval_sums_parse(&g->L, json_object_get(j, "sums"), g->v, name))) {
		int64_t want = g->total / g->count + (k < g->total % g->count);
		int64_t got = g->v[g->L.off[0]];   /* "examples" is field 0 of both tasks */
		if (got != want)
			rc = ouro_fail(OURO_EINPUT, "%s: shard %lld/%ld scored %lld examples of %lld; is the run complete?",
				       name, (long long)k, g->count, (long long)got, (long long)want);
		else if (!(rc = ouro_eval_sums_add(&g->L, g->acc, g->v, name))) {
			g->seen[k] = j;
			g->seen_by[k] = path;
			j = NULL;
		}
	}
	json_decref(j);
	return rc;
}

int ouro_eval_merge_end(struct ouro_eval_merge *g, json_t **report)
{
	*report = NULL;
	for (long k = 0; k < g->count; k++)
		if (!g->seen[k])
			return ouro_fail(OURO_EINPUT, "shard %ld/%ld is missing", k, g->count);
	*report = ouro_eval_report(g->config, 0, 0, g->total, &g->L, g->acc);
	return OURO_OK;
}

void ouro_eval_merge_free(struct ouro_eval_merge *g)
{
	for (long k = 0; g->seen && k < g->count; k++)
		json_decref(g->seen[k]);
	free(g->seen);
	free(g->seen_by);
	free(g->acc);
	free(g->v);
	json_decref(g->config);
}
