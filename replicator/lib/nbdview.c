/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A disk view that qemu exports over NBD, read through libnbd: the qemu
 * change tracker opens one per disk and cycle, walks its extents and reads
 * the data runs. Block status is asked for base:allocation and the dirty
 * bitmap's context in one request; the two extent lists, which need not
 * line up with each other nor with 4 KiB, are validated, cut at the request
 * and intersected into pieces, and the pieces are folded into whole 4 KiB
 * blocks (dirty if any byte is, zero only if every byte is), so that an
 * odd or hostile server can make the walk ship more but never less. Runs
 * of one kind are merged across requests before the caller sees them.
 */
#include "nbdview.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"

#define BITMAP_CONTEXT_PREFIX "qemu:dirty-bitmap:"
/* A block-status request's length is 32 bits on the wire; the default
 * keeps requests on 4 KiB boundaries. */
#define DEFAULT_MAX_REQUEST (UINT64_C(0x100000000) - FERRY_BLOCK_SIZE)
#define MAX_REQUEST_LIMIT UINT64_C(0xffffffff)
/* qemu advertises 32 MiB as its maximum payload; libnbd refuses over 64. */
#define READ_CHUNK_DEFAULT (32u << 20)
#define ERROR_MAX 512

enum {
	CTX_ALLOC,
	CTX_BITMAP,
	N_CTX
};

struct nbdview {
	struct nbd_handle *h;
	char *export_name;
	char *bitmap_ctx; /* "qemu:dirty-bitmap:NAME", or NULL */
	bool have_alloc;  /* base:allocation negotiated */
	uint64_t size;
	uint64_t max_request;
	char error[ERROR_MAX];
};

/* Failures of nbdview_open, where no handle is left to carry them. */
static __thread char open_error[ERROR_MAX];

static void nbd_closep(struct nbd_handle **h)
{
	if (*h)
		nbd_close(*h);
}

__attribute__((format(printf, 3, 4))) static int fail(char *buf, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, ERROR_MAX, fmt, ap);
	va_end(ap);
	return r;
}

/* libnbd's thread-local error, translated once here. It may carry no errno
 * (a refused option, a protocol violation it caught itself). */
static int fail_nbd(char *buf, const char *export_name, const char *what)
{
	int e = nbd_get_errno();
	const char *msg = nbd_get_error();
	return fail(buf, e > 0 ? -e : -EIO, "NBD export '%s': %s: %s", export_name, what,
		    msg ? msg : "unknown error");
}

int nbdview_open(const char *path, const char *export_name, const char *bitmap,
		 struct nbdview **ret)
{
	assert(path && export_name && ret);
	open_error[0] = '\0';

	_cleanup_(nbd_closep) struct nbd_handle *h = nbd_create();
	if (!h)
		return fail(open_error, -ENOMEM, "NBD export '%s': %s", export_name,
			    nbd_get_error() ?: "cannot create a libnbd handle");

	_cleanup_free_ char *bitmap_ctx = NULL;
	if (bitmap) {
		if (!*bitmap)
			return fail(open_error, -EINVAL, "NBD export '%s': empty bitmap name",
				    export_name);
		if (asprintf(&bitmap_ctx, BITMAP_CONTEXT_PREFIX "%s", bitmap) < 0)
			return fail(open_error, -ENOMEM, "out of memory");
	}
	if (nbd_set_export_name(h, export_name) < 0 ||
	    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    (bitmap_ctx && nbd_add_meta_context(h, bitmap_ctx) < 0))
		return fail_nbd(open_error, export_name, "setting up the connection");

	/* An unknown export (qemu answers NBD_REP_ERR_UNKNOWN) comes back from
	 * libnbd as ENOENT, as does a missing socket. */
	if (nbd_connect_unix(h, path) < 0)
		return fail_nbd(open_error, export_name, path);

	int64_t size = nbd_get_size(h);
	if (size < 0)
		return fail_nbd(open_error, export_name, "size");

	int alloc = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
	if (alloc < 0)
		return fail_nbd(open_error, export_name, LIBNBD_CONTEXT_BASE_ALLOCATION);
	if (bitmap_ctx) {
		int b = nbd_can_meta_context(h, bitmap_ctx);
		if (b < 0)
			return fail_nbd(open_error, export_name, bitmap_ctx);
		if (b == 0)
			return fail(open_error, -ENOENT,
				    "NBD export '%s' at %s has no dirty bitmap '%s' (meta context "
				    "'%s' not offered: was it exported with the bitmap?)",
				    export_name, path, bitmap, bitmap_ctx);
	}

	_cleanup_free_ struct nbdview *v = calloc(1, sizeof(*v));
	_cleanup_free_ char *name = strdup(export_name);
	if (!v || !name)
		return fail(open_error, -ENOMEM, "out of memory");
	v->h = TAKE_PTR(h);
	v->export_name = TAKE_PTR(name);
	v->bitmap_ctx = TAKE_PTR(bitmap_ctx);
	v->have_alloc = alloc > 0;
	v->size = (uint64_t)size;
	v->max_request = DEFAULT_MAX_REQUEST;
	*ret = TAKE_PTR(v);
	return 0;
}

struct nbdview *nbdview_free(struct nbdview *v)
{
	if (!v)
		return NULL;
	/* A polite NBD_CMD_DISC; failing it changes nothing for us. */
	(void)nbd_shutdown(v->h, 0);
	nbd_close(v->h);
	free(v->export_name);
	free(v->bitmap_ctx);
	free(v);
	return NULL;
}

uint64_t nbdview_size(const struct nbdview *v)
{
	return v->size;
}

int nbdview_set_max_request(struct nbdview *v, uint64_t bytes)
{
	if (bytes < 1 || bytes > MAX_REQUEST_LIMIT)
		return -EINVAL;
	v->max_request = bytes;
	return 0;
}

const char *nbdview_last_error(const struct nbdview *v)
{
	return v ? v->error : open_error;
}

/* ---- block status replies ---- */

/* One context's answer to one request, copied out of libnbd's callback
 * (which holds the handle's lock) and checked after it returns. */
struct ctx_reply {
	bool seen;
	uint32_t *e; /* length, flags pairs */
	size_t n;    /* pairs */
};

struct status_reply {
	struct nbdview *v;
	uint64_t offset;
	struct ctx_reply ctx[N_CTX];
	int r; /* first problem, or 0 */
};

static void status_reply_done(struct status_reply *s)
{
	for (size_t i = 0; i < N_CTX; i++)
		free(s->ctx[i].e);
}

static int on_extents(void *userdata, const char *context, uint64_t offset, uint32_t *entries,
		      size_t nr_entries, int *error)
{
	struct status_reply *s = userdata;
	struct nbdview *v = s->v;
	int i;

	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
		i = CTX_ALLOC;
	else if (v->bitmap_ctx && strcmp(context, v->bitmap_ctx) == 0)
		i = CTX_BITMAP;
	else
		return 0; /* not asked for; nothing of ours depends on it */
	if (s->r < 0)
		return 0;
	if (s->ctx[i].seen) {
		s->r = fail(v->error, -EPROTO, "NBD export '%s': context %s answered twice",
			    v->export_name, context);
		return 0;
	}
	s->ctx[i].seen = true;
	if (offset != s->offset || nr_entries == 0 || nr_entries % 2) {
		s->r = fail(v->error, -EPROTO,
			    "NBD export '%s': malformed %s reply (offset %" PRIu64 " for %" PRIu64
			    ", %zu entries)",
			    v->export_name, context, offset, s->offset, nr_entries);
		return 0;
	}
	s->ctx[i].e = malloc(nr_entries * sizeof(uint32_t));
	if (!s->ctx[i].e) {
		s->r = fail(v->error, -ENOMEM, "out of memory");
		return 0;
	}
	memcpy(s->ctx[i].e, entries, nr_entries * sizeof(uint32_t));
	s->ctx[i].n = nr_entries / 2;
	return 0;
}

/* Checks one context's extents and returns through *covered how far they
 * reach, cut at req_end. Lengths are summed in full before cutting, so a
 * reply that claims bytes past the export's end is caught even when the
 * claim lies past the request. */
static int check_extents(struct nbdview *v, const char *context, const struct ctx_reply *c,
			 uint64_t offset, uint64_t req_end, uint64_t *covered)
{
	if (!c->seen)
		return fail(v->error, -EPROTO,
			    "NBD export '%s': no block status for %s at %" PRIu64, v->export_name,
			    context, offset);
	uint64_t end = offset;
	for (size_t j = 0; j < c->n; j++) {
		uint32_t len = c->e[2 * j];
		if (len == 0)
			return fail(v->error, -EPROTO,
				    "NBD export '%s': zero-length extent in %s at %" PRIu64,
				    v->export_name, context, end);
		end += len; /* stays below size + 2^32: no overflow */
		if (end > v->size)
			return fail(v->error, -EPROTO,
				    "NBD export '%s': %s extent ends at %" PRIu64
				    ", past the end of the export (%" PRIu64 ")",
				    v->export_name, context, end, v->size);
	}
	*covered = MIN(end, req_end);
	return 0;
}

/* ---- folding pieces into 4 KiB blocks and runs ---- */

struct walk {
	const struct nbdview *v;
	uint64_t end;
	/* A block seen only in part so far (a piece ended inside it). */
	bool blk_open;
	bool blk_dirty, blk_zero;
	/* The run not yet reported: it may still grow. */
	bool run_open;
	uint64_t run_start, run_end;
	enum nbdview_kind run_kind;
	int (*cb)(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata);
	void *userdata;
};

static enum nbdview_kind kind_of(const struct nbdview *v, bool dirty, bool zero)
{
	if (!v->bitmap_ctx)
		return zero ? NBDVIEW_SKIP : NBDVIEW_DATA;
	if (!dirty)
		return NBDVIEW_SKIP;
	return zero ? NBDVIEW_ZERO : NBDVIEW_DATA;
}

static int emit(struct walk *w, uint64_t start, uint64_t end, enum nbdview_kind kind)
{
	assert(!w->run_open || w->run_end == start);
	if (w->run_open && w->run_kind == kind) {
		w->run_end = end;
		return 0;
	}
	if (w->run_open) {
		int r = w->cb(w->run_start, w->run_end - w->run_start, w->run_kind, w->userdata);
		if (r < 0)
			return r;
	}
	w->run_open = true;
	w->run_start = start;
	w->run_end = end;
	w->run_kind = kind;
	return 0;
}

static int flush(struct walk *w)
{
	assert(!w->blk_open);
	if (!w->run_open)
		return 0;
	w->run_open = false;
	return w->cb(w->run_start, w->run_end - w->run_start, w->run_kind, w->userdata);
}

/* Feeds [a, b), which is dirty and reads as zeros or not throughout. Whole
 * blocks go straight to the run; a block cut by a or b collects its pieces
 * first. */
static int feed(struct walk *w, uint64_t a, uint64_t b, bool dirty, bool zero)
{
	const uint64_t bs = FERRY_BLOCK_SIZE;
	int r;

	while (a < b) {
		if (!w->blk_open && a % bs == 0) {
			/* b == end may lie inside the export's last block, which
			 * then is whole. */
			uint64_t whole = b == w->end ? b : b - b % bs;
			if (whole > a) {
				r = emit(w, a, whole, kind_of(w->v, dirty, zero));
				if (r < 0)
					return r;
				a = whole;
				continue;
			}
		}
		/* Blocks only close at their end, and the walk starts aligned. */
		assert(w->blk_open || a % bs == 0);
		uint64_t blk_start = a - a % bs, blk_end = MIN(blk_start + bs, w->end);
		if (!w->blk_open) {
			w->blk_open = true;
			w->blk_dirty = false;
			w->blk_zero = true;
		}
		w->blk_dirty |= dirty;
		w->blk_zero &= zero;
		uint64_t piece_end = MIN(b, blk_end);
		if (piece_end == blk_end) {
			w->blk_open = false;
			r = emit(w, blk_start, blk_end, kind_of(w->v, w->blk_dirty, w->blk_zero));
			if (r < 0)
				return r;
		}
		a = piece_end;
	}
	return 0;
}

/* Steps through one context's extents alongside the other's. */
struct cursor {
	const struct ctx_reply *c; /* NULL: one extent without end */
	size_t j;
	uint64_t end; /* of extent j */
};

static void cursor_init(struct cursor *k, const struct ctx_reply *c, uint64_t offset)
{
	k->c = c;
	k->j = 0;
	k->end = c ? offset + c->e[0] : UINT64_MAX;
}

static uint32_t cursor_flags(const struct cursor *k)
{
	return k->c ? k->c->e[2 * k->j + 1] : 0;
}

static void cursor_advance(struct cursor *k, uint64_t pos)
{
	/* check_extents made every extent nonzero and the list long enough
	 * to reach the covered end; pos never passes it. */
	if (k->c && k->end == pos && k->j + 1 < k->c->n) {
		k->j++;
		k->end += k->c->e[2 * k->j];
	}
}

static int status_request(struct nbdview *v, struct walk *w, uint64_t pos, uint64_t *next)
{
	const uint64_t req = MIN(w->end - pos, v->max_request);
	_cleanup_(status_reply_done) struct status_reply s = { .v = v, .offset = pos };

	if (nbd_block_status(v->h, req, pos,
			     (nbd_extent_callback){ .callback = on_extents, .user_data = &s },
			     0) < 0) {
		/* A problem our callback found comes first: it is the cause. */
		if (s.r < 0)
			return s.r;
		return fail_nbd(v->error, v->export_name, "block status");
	}
	if (s.r < 0)
		return s.r;

	uint64_t covered = pos + req;
	const struct ctx_reply *alloc = v->have_alloc ? &s.ctx[CTX_ALLOC] : NULL;
	const struct ctx_reply *bitmap = v->bitmap_ctx ? &s.ctx[CTX_BITMAP] : NULL;
	int r;
	if (alloc) {
		uint64_t c;
		r = check_extents(v, LIBNBD_CONTEXT_BASE_ALLOCATION, alloc, pos, pos + req, &c);
		if (r < 0)
			return r;
		covered = MIN(covered, c);
	}
	if (bitmap) {
		uint64_t c;
		r = check_extents(v, v->bitmap_ctx, bitmap, pos, pos + req, &c);
		if (r < 0)
			return r;
		covered = MIN(covered, c);
	}

	/* Intersect: each piece lies within one extent of each context. */
	struct cursor ka, kb;
	cursor_init(&ka, alloc, pos);
	cursor_init(&kb, bitmap, pos);
	while (pos < covered) {
		uint64_t piece_end = MIN(MIN(ka.end, kb.end), covered);
		bool zero = alloc && (cursor_flags(&ka) & LIBNBD_STATE_ZERO);
		bool dirty = !bitmap || (cursor_flags(&kb) & 1);
		r = feed(w, pos, piece_end, dirty, zero);
		if (r < 0)
			return r;
		pos = piece_end;
		cursor_advance(&ka, pos);
		cursor_advance(&kb, pos);
	}
	*next = covered;
	return 0;
}

int nbdview_extents(struct nbdview *v, uint64_t offset, uint64_t len,
		    int (*cb)(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata),
		    void *userdata)
{
	assert(v && cb);
	v->error[0] = '\0';
	if (offset % FERRY_BLOCK_SIZE || len > v->size || offset > v->size - len ||
	    ((offset + len) % FERRY_BLOCK_SIZE && offset + len != v->size))
		return fail(v->error, -EINVAL,
			    "NBD export '%s': walk of %" PRIu64 "+%" PRIu64
			    " not on 4 KiB blocks of an export of %" PRIu64 " bytes",
			    v->export_name, offset, len, v->size);

	struct walk w = { .v = v, .end = offset + len, .cb = cb, .userdata = userdata };
	uint64_t pos = offset;
	int r;
	while (pos < w.end) {
		if (!v->have_alloc && !v->bitmap_ctx) {
			/* Nothing to ask: every block is data. */
			r = feed(&w, pos, w.end, true, false);
			if (r < 0)
				return r;
			break;
		}
		r = status_request(v, &w, pos, &pos);
		if (r < 0)
			return r;
	}
	return flush(&w);
}

int nbdview_read(struct nbdview *v, void *buf, size_t len, uint64_t off)
{
	assert(v && (buf || len == 0));
	v->error[0] = '\0';
	if (off > v->size || len > v->size - off)
		return fail(v->error, -EINVAL,
			    "NBD export '%s': read of %zu bytes at %" PRIu64
			    " past the end (%" PRIu64 ")",
			    v->export_name, len, off, v->size);

	int64_t max = nbd_get_block_size(v->h, LIBNBD_SIZE_MAXIMUM);
	size_t chunk = max > 0 && max < READ_CHUNK_DEFAULT ? (size_t)max : READ_CHUNK_DEFAULT;
	uint8_t *p = buf;
	while (len > 0) {
		size_t n = MIN(len, chunk);
		if (nbd_pread(v->h, p, n, off, 0) < 0)
			return fail_nbd(v->error, v->export_name, "read");
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}
