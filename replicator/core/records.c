/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Record codec (docs/format/records.md). Each kind is described once by a
 * table of fields (key, type, where it lives); the same table drives the
 * encoder and the single-pass decoder, so the two cannot drift apart.
 * Repeated groups (disks, resources) use keys "GROUP.N.FIELD".
 */
#include "ferry/records.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/catalog.h"
#include "ferry/crypto.h"
#include "ferry/ingest.h"
#include "ferry/util.h"
#include "ferry/vault.h"

#define MAGIC "FERRYREC"
#define KEY_MAX 64

enum ftype {
	F_TEXT, /* any bytes but NUL, escaped */
	F_NAME, /* ferry_name_valid */
	F_U64,
	F_I64,
	F_U32,
	F_INT,
	F_ID,
};

struct fdesc {
	const char *key;
	enum ftype type;
	size_t off;
	size_t size; /* of F_TEXT / F_NAME buffers */
	/* 0: required since 1.0. N > 0: added by minor version N, optional
	 * (absent reads as zero, and zero is not written); a record that
	 * writes it says minor N. */
	unsigned since_minor;
};

#define FIELD(st, key, type, member)                                          \
	{                                                                     \
		key, type, offsetof(st, member), sizeof(((st *)0)->member), 0 \
	}
#define FIELD_SINCE(st, key, type, member, minor)                                 \
	{                                                                         \
		key, type, offsetof(st, member), sizeof(((st *)0)->member), minor \
	}

struct gdesc {
	const char *name; /* "disk", "resource" */
	const struct fdesc *fields;
	size_t nfields;
	size_t elem_size;
	size_t idx_off; /* offset of a uint16_t index in the element, or SIZE_MAX */
	size_t max;
	size_t array_off, count_off; /* of the element pointer and count in the record */
};

struct kdesc {
	const char *kind;
	enum ferry_obj_type type;
	const struct fdesc *fields;
	size_t nfields;
	const struct gdesc *groups;
	size_t ngroups;
};

/* ---- the kinds ---- */

static const struct fdesc vault_fields[] = {
	FIELD(struct ferry_record_vault, "vault-id", F_TEXT, vault_id),
	FIELD(struct ferry_record_vault, "chunk-size", F_U32, chunk_size),
	FIELD(struct ferry_record_vault, "created", F_I64, created_ns),
};

static const struct fdesc vm_fields[] = {
	FIELD(struct ferry_record_vm, "name", F_NAME, name),
	FIELD(struct ferry_record_vm, "created", F_I64, created_ns),
	FIELD(struct ferry_record_vm, "written", F_I64, written_ns),
	FIELD(struct ferry_record_vm, "cache", F_TEXT, cache_url),
	FIELD(struct ferry_record_vm, "crash-interval", F_I64, crash_interval_s),
	FIELD(struct ferry_record_vm, "app-interval", F_I64, app_interval_s),
	FIELD(struct ferry_record_vm, "retention", F_I64, retention_s),
};
static const struct fdesc vm_disk_fields[] = {
	FIELD(struct ferry_disk, "name", F_NAME, name),
	FIELD(struct ferry_disk, "source", F_TEXT, source_path),
};
static const struct fdesc resource_fields[] = {
	FIELD(struct ferry_record_resource, "kind", F_TEXT, kind),
	FIELD(struct ferry_record_resource, "value", F_TEXT, value),
};
static const struct gdesc vm_groups[] = {
	{ "disk", vm_disk_fields, ARRAY_SIZE(vm_disk_fields), sizeof(struct ferry_disk),
	  offsetof(struct ferry_disk, idx), FERRY_RECORD_MAX_DISKS,
	  offsetof(struct ferry_record_vm, disks), offsetof(struct ferry_record_vm, ndisks) },
	{ "resource", resource_fields, ARRAY_SIZE(resource_fields),
	  sizeof(struct ferry_record_resource), SIZE_MAX, FERRY_RECORD_MAX_RESOURCES,
	  offsetof(struct ferry_record_vm, resources),
	  offsetof(struct ferry_record_vm, nresources) },
};

static const struct fdesc state_fields[] = {
	FIELD(struct ferry_record_state, "vm", F_NAME, vm),
	FIELD(struct ferry_record_state, "vm-created", F_I64, vm_created_ns),
	FIELD(struct ferry_record_state, "state", F_INT, state),
	FIELD(struct ferry_record_state, "applied-seq", F_U64, applied_seq),
	FIELD(struct ferry_record_state, "applied-digest", F_ID, applied_digest),
	FIELD(struct ferry_record_state, "marker-seq", F_U64, marker_seq),
	FIELD(struct ferry_record_state, "marker-time", F_I64, marker_ns),
	FIELD(struct ferry_record_state, "initial-done", F_U64, initial_done),
	FIELD(struct ferry_record_state, "initial-total", F_U64, initial_total),
};
static const struct fdesc state_disk_fields[] = {
	FIELD(struct ferry_disk, "name", F_NAME, name),
	FIELD(struct ferry_disk, "size", F_U64, size),
	FIELD(struct ferry_disk, "live-root", F_ID, live_root),
	FIELD(struct ferry_disk, "work-root", F_ID, work_root),
};
static const struct gdesc state_groups[] = {
	{ "disk", state_disk_fields, ARRAY_SIZE(state_disk_fields), sizeof(struct ferry_disk),
	  offsetof(struct ferry_disk, idx), FERRY_RECORD_MAX_DISKS,
	  offsetof(struct ferry_record_state, disks), offsetof(struct ferry_record_state, ndisks) },
};

static const struct fdesc point_fields[] = {
	FIELD(struct ferry_record_point, "vm", F_NAME, vm),
	FIELD(struct ferry_record_point, "vm-created", F_I64, vm_created_ns),
	FIELD(struct ferry_record_point, "name", F_NAME, name),
	FIELD(struct ferry_record_point, "time", F_I64, time_ns),
	FIELD(struct ferry_record_point, "consistency", F_INT, consistency),
	FIELD(struct ferry_record_point, "seq", F_U64, seq),
	FIELD(struct ferry_record_point, "digest", F_ID, digest),
	FIELD_SINCE(struct ferry_record_point, "group-round", F_U64, group_round, 1),
};
static const struct fdesc point_disk_fields[] = {
	FIELD(struct ferry_point_disk, "name", F_NAME, name),
	FIELD(struct ferry_point_disk, "size", F_U64, size),
	FIELD(struct ferry_point_disk, "root", F_ID, root),
};
static const struct gdesc point_groups[] = {
	{ "disk", point_disk_fields, ARRAY_SIZE(point_disk_fields), sizeof(struct ferry_point_disk),
	  offsetof(struct ferry_point_disk, idx), FERRY_RECORD_MAX_DISKS,
	  offsetof(struct ferry_record_point, disks), offsetof(struct ferry_record_point, ndisks) },
};

static const struct kdesc kinds[] = {
	{ "vault", FERRY_OBJ_VAULT, vault_fields, ARRAY_SIZE(vault_fields), NULL, 0 },
	{ "vm", FERRY_OBJ_VM, vm_fields, ARRAY_SIZE(vm_fields), vm_groups, ARRAY_SIZE(vm_groups) },
	{ "state", FERRY_OBJ_STATE, state_fields, ARRAY_SIZE(state_fields), state_groups,
	  ARRAY_SIZE(state_groups) },
	{ "point", FERRY_OBJ_POINT, point_fields, ARRAY_SIZE(point_fields), point_groups,
	  ARRAY_SIZE(point_groups) },
};

static const struct kdesc *kind_by_type(enum ferry_obj_type t)
{
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		if (kinds[i].type == t)
			return &kinds[i];
	return NULL;
}

static void **group_array(const struct gdesc *g, void *rec)
{
	return (void **)((uint8_t *)rec + g->array_off);
}

static size_t *group_count(const struct gdesc *g, void *rec)
{
	return (size_t *)((uint8_t *)rec + g->count_off);
}

/* ---- semantic checks shared by encoder and decoder ---- */

static int text_ok(const char *s, size_t size)
{
	return memchr(s, 0, size) != NULL;
}

static int check_field(const struct fdesc *f, const void *base)
{
	const uint8_t *p = (const uint8_t *)base + f->off;
	if (f->type == F_TEXT)
		return text_ok((const char *)p, f->size) ? 0 : -EINVAL;
	if (f->type == F_NAME)
		return text_ok((const char *)p, f->size) && ferry_name_valid((const char *)p) ?
			       0 :
			       -EINVAL;
	return 0;
}

static int is_hex(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

/* What the tables cannot say: ranges and cross-field rules. */
static int check_kind(enum ferry_obj_type t, const void *rec)
{
	switch (t) {
	case FERRY_OBJ_VAULT: {
		const struct ferry_record_vault *r = rec;
		uint32_t cs = r->chunk_size;
		if (!is_hex(r->vault_id) || cs < FERRY_CHUNK_SIZE_MIN ||
		    cs > FERRY_CHUNK_SIZE_MAX || (cs & (cs - 1)))
			return -EINVAL;
		return 0;
	}
	case FERRY_OBJ_VM: {
		const struct ferry_record_vm *r = rec;
		if (r->crash_interval_s < 0 || r->app_interval_s < 0 || r->retention_s <= 0 ||
		    r->ndisks == 0)
			return -EINVAL;
		for (size_t i = 0; i < r->nresources; i++)
			if (!r->resources[i].kind[0])
				return -EINVAL;
		for (size_t i = 0; i < r->ndisks; i++)
			for (size_t j = 0; j < i; j++)
				if (strcmp(r->disks[i].name, r->disks[j].name) == 0)
					return -EINVAL;
		return 0;
	}
	case FERRY_OBJ_STATE: {
		const struct ferry_record_state *r = rec;
		if (r->state < FERRY_VM_INITIAL || r->state > FERRY_VM_FAILED_BACK)
			return -EINVAL;
		return 0;
	}
	case FERRY_OBJ_POINT: {
		const struct ferry_record_point *r = rec;
		if (r->consistency < 1 || r->consistency > 2 || r->ndisks == 0 ||
		    r->group_round > (uint64_t)INT64_MAX)
			return -EINVAL;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

static int check_record(const struct kdesc *k, const void *rec)
{
	for (size_t i = 0; i < k->nfields; i++)
		if (check_field(&k->fields[i], rec) < 0)
			return -EINVAL;
	for (size_t g = 0; g < k->ngroups; g++) {
		const struct gdesc *gd = &k->groups[g];
		size_t n = *group_count(gd, (void *)rec);
		const uint8_t *arr = *group_array(gd, (void *)rec);
		if (n > gd->max || (n && !arr))
			return -EINVAL;
		for (size_t e = 0; e < n; e++) {
			const uint8_t *el = arr + e * gd->elem_size;
			if (gd->idx_off != SIZE_MAX) {
				uint16_t idx;
				memcpy(&idx, el + gd->idx_off, sizeof(idx));
				if (idx != e)
					return -EINVAL;
			}
			for (size_t i = 0; i < gd->nfields; i++)
				if (check_field(&gd->fields[i], el) < 0)
					return -EINVAL;
		}
	}
	return check_kind(k->type, rec);
}

/* ---- encoder ---- */

struct wbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void put(struct wbuf *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (w->len + n + 1 > w->cap) {
		size_t cap = MAX(w->cap * 2, w->len + n + 256);
		char *np = realloc(w->p, cap);
		if (!np) {
			w->err = -ENOMEM;
			return;
		}
		w->p = np;
		w->cap = cap;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	w->p[w->len] = 0;
}

static void puts_(struct wbuf *w, const char *s)
{
	put(w, s, strlen(s));
}

static bool needs_escape(unsigned char c)
{
	return c < 0x20 || c > 0x7e || c == '%';
}

static void put_value(struct wbuf *w, const struct fdesc *f, const void *base)
{
	const uint8_t *p = (const uint8_t *)base + f->off;
	char num[32];
	switch (f->type) {
	case F_TEXT:
	case F_NAME:
		for (const unsigned char *s = p; *s; s++) {
			if (needs_escape(*s)) {
				snprintf(num, sizeof(num), "%%%02X", *s);
				puts_(w, num);
			} else
				put(w, (const char *)s, 1);
		}
		return;
	case F_U64: {
		uint64_t v;
		memcpy(&v, p, sizeof(v));
		snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
		break;
	}
	case F_I64: {
		int64_t v;
		memcpy(&v, p, sizeof(v));
		snprintf(num, sizeof(num), "%lld", (long long)v);
		break;
	}
	case F_U32: {
		uint32_t v;
		memcpy(&v, p, sizeof(v));
		snprintf(num, sizeof(num), "%u", v);
		break;
	}
	case F_INT: {
		int v;
		memcpy(&v, p, sizeof(v));
		snprintf(num, sizeof(num), "%d", v);
		break;
	}
	case F_ID: {
		char hex[FERRY_ID_HEX_SIZE];
		puts_(w, ferry_id_to_hex((const struct ferry_id *)p, hex));
		return;
	}
	}
	puts_(w, num);
}

/* Whether an optional field holds zero, and is therefore left out. */
static bool field_absent(const struct fdesc *f, const void *base)
{
	static const uint8_t zero[sizeof(uint64_t)];
	const uint8_t *p = (const uint8_t *)base + f->off;
	assert(f->type == F_U64 || f->type == F_I64 || f->type == F_U32 || f->type == F_INT);
	return f->since_minor && memcmp(p, zero, f->size) == 0;
}

static int encode(enum ferry_obj_type t, const void *rec, char **ret_buf, size_t *ret_len)
{
	const struct kdesc *k = kind_by_type(t);
	if (!k || check_record(k, rec) < 0)
		return -EINVAL;
	/* The oldest minor version that has every key written: records of
	 * 1.0 content stay byte for byte what they were. */
	unsigned minor = 0;
	for (size_t i = 0; i < k->nfields; i++)
		if (k->fields[i].since_minor && !field_absent(&k->fields[i], rec))
			minor = MAX(minor, k->fields[i].since_minor);
	struct wbuf w = { 0 };
	char line[64];
	snprintf(line, sizeof(line), MAGIC " %d.%u %s\n", FERRY_RECORD_MAJOR, minor, k->kind);
	puts_(&w, line);
	for (size_t i = 0; i < k->nfields; i++) {
		if (k->fields[i].since_minor && field_absent(&k->fields[i], rec))
			continue;
		puts_(&w, k->fields[i].key);
		puts_(&w, "=");
		put_value(&w, &k->fields[i], rec);
		puts_(&w, "\n");
	}
	for (size_t g = 0; g < k->ngroups; g++) {
		const struct gdesc *gd = &k->groups[g];
		size_t n = *group_count(gd, (void *)rec);
		const uint8_t *arr = *group_array(gd, (void *)rec);
		for (size_t e = 0; e < n; e++)
			for (size_t i = 0; i < gd->nfields; i++) {
				snprintf(line, sizeof(line), "%s.%zu.%s=", gd->name, e,
					 gd->fields[i].key);
				puts_(&w, line);
				put_value(&w, &gd->fields[i], arr + e * gd->elem_size);
				puts_(&w, "\n");
			}
	}
	puts_(&w, "end\n");
	if (w.err) {
		free(w.p);
		return w.err;
	}
	if (w.len > FERRY_OBJ_MAX) {
		free(w.p);
		return -E2BIG;
	}
	*ret_buf = w.p;
	*ret_len = w.len;
	return 0;
}

/* ---- decoder ---- */

/* The spec's integer (and the index N of a group key): what
 * ferry_parse_u64() takes, less leading zeros, so that every value has
 * exactly one spelling ("0" itself is fine). */
static int parse_integer(const char *s, size_t n, uint64_t *ret)
{
	if (n > 1 && s[0] == '0')
		return -EBADMSG;
	return ferry_parse_u64(s, n, UINT64_MAX, ret) < 0 ? -EBADMSG : 0;
}

static int parse_i64(const char *s, size_t n, int64_t *ret)
{
	bool neg = n > 0 && s[0] == '-';
	uint64_t v;
	int r = parse_integer(s + neg, n - neg, &v);
	if (r < 0)
		return r;
	if (neg ? v > (uint64_t)INT64_MAX + 1 || v == 0 : v > (uint64_t)INT64_MAX)
		return -EBADMSG;
	*ret = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int set_value(const struct fdesc *f, void *base, const char *v, size_t n)
{
	uint8_t *p = (uint8_t *)base + f->off;
	switch (f->type) {
	case F_TEXT:
	case F_NAME: {
		char *out = (char *)p;
		size_t o = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)v[i];
			if (c == '%') {
				if (n - i < 3)
					return -EBADMSG;
				int hi = hexval(v[i + 1]), lo = hexval(v[i + 2]);
				if (hi < 0 || lo < 0 || (hi | lo) == 0)
					return -EBADMSG;
				c = (unsigned char)(hi << 4 | lo);
				i += 2;
			} else if (needs_escape(c))
				return -EBADMSG;
			if (o + 1 >= f->size)
				return -EBADMSG;
			out[o++] = (char)c;
		}
		out[o] = 0;
		if (f->type == F_NAME && !ferry_name_valid(out))
			return -EBADMSG;
		return 0;
	}
	case F_U64: {
		uint64_t x;
		int r = parse_integer(v, n, &x);
		if (r >= 0)
			memcpy(p, &x, sizeof(x));
		return r;
	}
	case F_I64: {
		int64_t x;
		int r = parse_i64(v, n, &x);
		if (r >= 0)
			memcpy(p, &x, sizeof(x));
		return r;
	}
	case F_U32: {
		uint64_t x;
		int r = parse_integer(v, n, &x);
		if (r < 0 || x > UINT32_MAX)
			return -EBADMSG;
		uint32_t y = (uint32_t)x;
		memcpy(p, &y, sizeof(y));
		return 0;
	}
	case F_INT: {
		int64_t x;
		int r = parse_i64(v, n, &x);
		if (r < 0 || x < INT32_MIN || x > INT32_MAX)
			return -EBADMSG;
		int y = (int)x;
		memcpy(p, &y, sizeof(y));
		return 0;
	}
	case F_ID: {
		if (n != FERRY_ID_HEX_SIZE - 1)
			return -EBADMSG;
		char hex[FERRY_ID_HEX_SIZE];
		memcpy(hex, v, n);
		hex[n] = 0;
		for (size_t i = 0; i < n; i++)
			if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
				return -EBADMSG;
		struct ferry_id id;
		if (ferry_id_from_hex(hex, &id) < 0)
			return -EBADMSG;
		memcpy(p, &id, sizeof(id));
		return 0;
	}
	}
	return -EBADMSG;
}

static bool key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* Parses the first line; *ret_end: offset just past it. */
static int parse_header(const char *buf, size_t len, const struct kdesc **ret, size_t *ret_end)
{
	const char *nl = memchr(buf, '\n', MIN(len, (size_t)64));
	size_t mlen = strlen(MAGIC);
	if (!nl || (size_t)(nl - buf) < mlen + 1 || memcmp(buf, MAGIC " ", mlen + 1) != 0)
		return -EBADMSG;
	const char *p = buf + mlen + 1, *end = nl;
	const char *dot = memchr(p, '.', (size_t)(end - p));
	if (!dot)
		return -EBADMSG;
	const char *sp = memchr(dot, ' ', (size_t)(end - dot));
	if (!sp)
		return -EBADMSG;
	uint64_t major, minor;
	if (parse_integer(p, (size_t)(dot - p), &major) < 0 ||
	    parse_integer(dot + 1, (size_t)(sp - dot - 1), &minor) < 0)
		return -EBADMSG;
	if (major != FERRY_RECORD_MAJOR)
		return -EPROTONOSUPPORT;
	size_t klen = (size_t)(end - sp - 1);
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		if (strlen(kinds[i].kind) == klen && memcmp(kinds[i].kind, sp + 1, klen) == 0) {
			*ret = &kinds[i];
			*ret_end = (size_t)(nl - buf) + 1;
			return 0;
		}
	return -EBADMSG;
}

int ferry_record_kind(const void *buf, size_t len, enum ferry_obj_type *ret)
{
	const struct kdesc *k;
	size_t end;
	int r = parse_header(buf, len, &k, &end);
	if (r < 0)
		return r;
	*ret = k->type;
	return 0;
}

struct group_state {
	uint8_t *arr;
	size_t n;       /* elements allocated and in use: max index + 1 */
	uint32_t *seen; /* per element, one bit per field */
};

static void free_groups(const struct kdesc *k, void *rec)
{
	for (size_t g = 0; g < k->ngroups; g++) {
		void **arr = group_array(&k->groups[g], rec);
		free(*arr);
		*arr = NULL;
		*group_count(&k->groups[g], rec) = 0;
	}
}

static int group_line(const struct gdesc *gd, struct group_state *gs, const char *key, size_t klen,
		      const char *v, size_t vlen)
{
	/* key is "N.FIELD" here. */
	const char *dot = memchr(key, '.', klen);
	if (!dot)
		return -EBADMSG;
	uint64_t idx;
	if (parse_integer(key, (size_t)(dot - key), &idx) < 0 || idx >= gd->max)
		return -EBADMSG;
	const char *fname = dot + 1;
	size_t flen = klen - (size_t)(dot - key) - 1;
	const struct fdesc *f = NULL;
	size_t fi = 0;
	for (; fi < gd->nfields; fi++)
		if (strlen(gd->fields[fi].key) == flen &&
		    memcmp(gd->fields[fi].key, fname, flen) == 0) {
			f = &gd->fields[fi];
			break;
		}
	if (!f)
		return 0; /* a field of a later minor version */
	if (idx >= gs->n) {
		size_t n = (size_t)idx + 1;
		uint8_t *arr = realloc(gs->arr, n * gd->elem_size);
		if (!arr)
			return -ENOMEM;
		gs->arr = arr;
		uint32_t *seen = realloc(gs->seen, n * sizeof(*seen));
		if (!seen)
			return -ENOMEM;
		gs->seen = seen;
		memset(gs->arr + gs->n * gd->elem_size, 0, (n - gs->n) * gd->elem_size);
		memset(gs->seen + gs->n, 0, (n - gs->n) * sizeof(*seen));
		gs->n = n;
	}
	if (gs->seen[idx] & (1u << fi))
		return -EBADMSG;
	gs->seen[idx] |= 1u << fi;
	return set_value(f, gs->arr + idx * gd->elem_size, v, vlen);
}

static int decode_lines(const struct kdesc *k, const char *buf, size_t len, size_t pos, void *rec,
			struct group_state *gs)
{
	uint32_t seen = 0;
	for (;;) {
		if (pos >= len)
			return -EBADMSG; /* no end line */
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		if (!nl)
			return -EBADMSG;
		size_t llen = (size_t)(nl - line);
		pos += llen + 1;
		if (llen == 3 && memcmp(line, "end", 3) == 0) {
			if (pos != len)
				return -EBADMSG;
			break;
		}
		const char *eq = memchr(line, '=', llen);
		if (!eq || eq == line || eq - line > KEY_MAX)
			return -EBADMSG;
		size_t klen = (size_t)(eq - line);
		for (size_t i = 0; i < klen; i++)
			if (!key_char(line[i]))
				return -EBADMSG;
		const char *v = eq + 1;
		size_t vlen = llen - klen - 1;

		bool done = false;
		for (size_t g = 0; g < k->ngroups && !done; g++) {
			size_t glen = strlen(k->groups[g].name);
			if (klen > glen + 1 && memcmp(line, k->groups[g].name, glen) == 0 &&
			    line[glen] == '.') {
				int r = group_line(&k->groups[g], &gs[g], line + glen + 1,
						   klen - glen - 1, v, vlen);
				if (r < 0)
					return r;
				done = true;
			}
		}
		for (size_t i = 0; i < k->nfields && !done; i++)
			if (strlen(k->fields[i].key) == klen &&
			    memcmp(k->fields[i].key, line, klen) == 0) {
				if (seen & (1u << i))
					return -EBADMSG;
				seen |= 1u << i;
				int r = set_value(&k->fields[i], rec, v, vlen);
				if (r < 0)
					return r;
				done = true;
			}
		/* Anything else: a key of a later minor version, ignored. */
	}
	uint32_t required = 0;
	for (size_t i = 0; i < k->nfields; i++)
		if (!k->fields[i].since_minor)
			required |= 1u << i;
	if ((seen & required) != required)
		return -EBADMSG;
	for (size_t g = 0; g < k->ngroups; g++) {
		const struct gdesc *gd = &k->groups[g];
		uint32_t all = (1u << gd->nfields) - 1;
		for (size_t e = 0; e < gs[g].n; e++) {
			if (gs[g].seen[e] != all)
				return -EBADMSG; /* a gap, or a field missing */
			if (gd->idx_off != SIZE_MAX) {
				uint16_t idx = (uint16_t)e;
				memcpy(gs[g].arr + e * gd->elem_size + gd->idx_off, &idx,
				       sizeof(idx));
			}
		}
	}
	return 0;
}

static int decode(enum ferry_obj_type t, const void *buf, size_t len, void *ret, size_t ret_size)
{
	if (!buf || len > FERRY_OBJ_MAX)
		return -EBADMSG;
	const struct kdesc *k;
	size_t pos;
	int r = parse_header(buf, len, &k, &pos);
	if (r < 0)
		return r;
	if (k->type != t)
		return -EBADMSG;

	_cleanup_free_ void *rec = calloc(1, ret_size);
	struct group_state gs[2] = { 0 };
	if (!rec)
		return -ENOMEM;
	assert(k->ngroups <= ARRAY_SIZE(gs));
	r = decode_lines(k, buf, len, pos, rec, gs);
	for (size_t g = 0; g < k->ngroups; g++) {
		*group_array(&k->groups[g], rec) = gs[g].arr;
		*group_count(&k->groups[g], rec) = gs[g].n;
		free(gs[g].seen);
	}
	if (r >= 0 && check_kind(t, rec) < 0)
		r = -EBADMSG;
	if (r < 0) {
		free_groups(k, rec);
		return r;
	}
	memcpy(ret, rec, ret_size);
	return 0;
}

/* ---- public codecs ---- */

int ferry_record_vault_encode(const struct ferry_record_vault *r, char **ret_buf, size_t *ret_len)
{
	return encode(FERRY_OBJ_VAULT, r, ret_buf, ret_len);
}

int ferry_record_vault_decode(const void *buf, size_t len, struct ferry_record_vault *ret)
{
	return decode(FERRY_OBJ_VAULT, buf, len, ret, sizeof(*ret));
}

int ferry_record_vm_encode(const struct ferry_record_vm *r, char **ret_buf, size_t *ret_len)
{
	return encode(FERRY_OBJ_VM, r, ret_buf, ret_len);
}

int ferry_record_vm_decode(const void *buf, size_t len, struct ferry_record_vm *ret)
{
	return decode(FERRY_OBJ_VM, buf, len, ret, sizeof(*ret));
}

void ferry_record_vm_done(struct ferry_record_vm *r)
{
	if (r)
		free_groups(kind_by_type(FERRY_OBJ_VM), r);
}

int ferry_record_state_encode(const struct ferry_record_state *r, char **ret_buf, size_t *ret_len)
{
	return encode(FERRY_OBJ_STATE, r, ret_buf, ret_len);
}

int ferry_record_state_decode(const void *buf, size_t len, struct ferry_record_state *ret)
{
	return decode(FERRY_OBJ_STATE, buf, len, ret, sizeof(*ret));
}

void ferry_record_state_done(struct ferry_record_state *r)
{
	if (r)
		free_groups(kind_by_type(FERRY_OBJ_STATE), r);
}

int ferry_record_point_encode(const struct ferry_record_point *r, char **ret_buf, size_t *ret_len)
{
	return encode(FERRY_OBJ_POINT, r, ret_buf, ret_len);
}

int ferry_record_point_decode(const void *buf, size_t len, struct ferry_record_point *ret)
{
	return decode(FERRY_OBJ_POINT, buf, len, ret, sizeof(*ret));
}

void ferry_record_point_done(struct ferry_record_point *r)
{
	if (r)
		free_groups(kind_by_type(FERRY_OBJ_POINT), r);
}

/* ---- storing a record on its own ---- */

int ferry_record_store(struct ferry_vault *v, enum ferry_obj_type type, const void *buf, size_t len,
		       struct ferry_id *ret_id, ferry_ingest_rows_t rows, void *userdata)
{
	struct ferry_ingest *in = NULL;
	int r = ferry_ingest_new(v, &in);
	if (r >= 0)
		r = ferry_ingest_add_record(in, type, buf, len, ret_id);
	if (r >= 0)
		r = ferry_ingest_commit(in, rows, userdata);
	ferry_ingest_free(in);
	return r;
}
