/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shipping what a view shows (viewship.h), for the trackers that read
 * views over NBD. nbdview.c classifies the blocks; on_extent() turns runs
 * into records: DATA for what was read (after a lost bitmap only the
 * blocks whose fingerprint differs from what was shipped), ZERO for runs
 * that read as zeros. Fingerprint updates wait in a pending list until the
 * segment carrying their blocks is in the cache (pend_apply), so the
 * fingerprint file never claims more than the chain holds.
 */
#include "viewship.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/cache.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "fpfile.h"
#include "nbdview.h"

#define BLOCK FERRY_BLOCK_SIZE
#define READ_MAX (1024u * 1024u)
#define SEGMENT_CUT (16u * 1024u * 1024u)

/* A fingerprint update that waits for its segment to be in the cache. */
struct pending_fp {
	uint16_t disk;
	int zero;        /* blocks read as zeros: no fingerprints */
	uint64_t block;  /* first block */
	uint64_t n;      /* blocks */
	size_t first_fp; /* index into viewship.pfps */
};

struct viewship {
	const struct viewship_params *p;
	struct viewship_disk *disks;
	struct agent_scan_stats *st; /* the tracker's, for the cycle begun */
	struct agent_scan_stats none;

	/* Fingerprints of what the open segment carries, written once it is
	 * in the cache (fpfile.h). */
	struct pending_fp *pend;
	size_t npend, apend;
	struct ferry_fp *pfps;
	size_t npfps, apfps;

	/* the segment being filled */
	struct ferry_segment_writer *w;
	uint64_t next_seq;
	uint64_t first_seq; /* next_seq when the cycle began */
	struct ferry_id prev;
	/* A resync's base (viewship_resync): the chain goes on after it until
	 * the cache holds something newer. */
	uint64_t base_seq;
	struct ferry_id base_prev;
	int declared;
	uint8_t *buf;
};

/* ---- segments ---- */

static int segment_open(struct viewship *vs)
{
	if (vs->w && vs->declared)
		return 0;
	const struct viewship_params *p = vs->p;
	int r = vs->w ? ferry_segment_writer_reset(vs->w, vs->next_seq, &vs->prev) :
			ferry_segment_writer_new(p->vm, vs->next_seq, &vs->prev, &vs->w);
	if (r >= 0 && p->chunk_size)
		r = ferry_segment_writer_set_chunking(vs->w, p->chunk_size);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot start segment %" PRIu64, p->vm,
				       vs->next_seq);
	ferry_segment_writer_set_workers(vs->w, p->compress_workers);
	for (size_t i = 0; r >= 0 && i < p->ndisks; i++)
		r = ferry_segment_writer_add_disk(vs->w, vs->disks[i].idx, vs->disks[i].name,
						  vs->disks[i].size);
	vs->declared = r >= 0;
	return r;
}

static int pend_add(struct viewship *vs, uint16_t disk, int zero, uint64_t block, uint64_t n,
		    const struct ferry_fp *fps)
{
	if (vs->npend == vs->apend) {
		size_t k = vs->apend ? vs->apend * 2 : 64;
		struct pending_fp *a = realloc(vs->pend, k * sizeof(*a));
		if (!a)
			return -ENOMEM;
		vs->pend = a;
		vs->apend = k;
	}
	if (!zero && vs->npfps + n > vs->apfps) {
		size_t k = MAX(vs->apfps * 2, vs->npfps + n);
		struct ferry_fp *a = realloc(vs->pfps, k * sizeof(*a));
		if (!a)
			return -ENOMEM;
		vs->pfps = a;
		vs->apfps = k;
	}
	vs->pend[vs->npend++] = (struct pending_fp){ disk, zero, block, n, vs->npfps };
	if (!zero) {
		memcpy(vs->pfps + vs->npfps, fps, n * sizeof(*fps));
		vs->npfps += n;
	}
	return 0;
}

/* The segment just put carries these blocks: their fingerprints may say
 * so now. A failure here only costs blocks shipped again after a lost
 * bitmap, so it is logged, not fatal. */
static void pend_apply(struct viewship *vs)
{
	for (size_t i = 0; i < vs->npend; i++) {
		const struct pending_fp *e = &vs->pend[i];
		struct viewship_disk *d = &vs->disks[e->disk];
		int r = e->zero ?
				fpfile_zero(d->fp, e->block, e->n) :
				fpfile_put(d->fp, e->block, (uint32_t)e->n, vs->pfps + e->first_fp);
		if (r < 0)
			log_warning_errno(r, "VM %s: disk %s: cannot record fingerprints in %s",
					  vs->p->vm, d->name, d->fp_path);
	}
	vs->npend = vs->npfps = 0;
}

static int segment_put(struct viewship *vs)
{
	_cleanup_free_ void *buf = NULL;
	size_t len;
	struct ferry_segment_info info;
	const struct viewship_params *p = vs->p;
	int r = ferry_segment_writer_finish(vs->w, &buf, &len, &info);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot encode segment %" PRIu64, p->vm,
				       vs->next_seq);
	r = ferry_cache_put_segment(p->cache, p->vm, vs->next_seq, buf, len);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot put segment %" PRIu64 " into %s", p->vm,
				       vs->next_seq, ferry_cache_url(p->cache));
	vs->st->seq = vs->next_seq;
	vs->st->segments++;
	vs->next_seq++;
	vs->prev = info.digest;
	vs->declared = 0;
	pend_apply(vs);
	return 0;
}

static int segment_maybe_cut(struct viewship *vs)
{
	return ferry_segment_writer_size(vs->w) >= SEGMENT_CUT ? segment_put(vs) : 0;
}

/* Where the chain stands: after the newest of the acknowledged segment and
 * the segments waiting in the cache. */
static int chain_position(struct viewship *vs)
{
	struct ferry_chain_head h;
	int r = ferry_cache_chain_head(vs->p->cache, vs->p->vm, 0, &h);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot find where its segment chain stands in %s",
				       vs->p->vm, ferry_cache_url(vs->p->cache));
	vs->next_seq = (h.top_seq ?: h.ack.seq) + 1;
	vs->prev = h.top_seq ? h.top_digest : h.ack.digest;
	if (vs->base_seq >= vs->next_seq) {
		vs->next_seq = vs->base_seq + 1;
		vs->prev = vs->base_prev;
	}
	return 0;
}

/* ---- reading one view ---- */

struct reader {
	struct viewship *vs;
	struct viewship_disk *d;
	struct nbdview *v;
	int first; /* the chain's first cycle: the target starts empty */
};

static int add_zero(struct viewship *vs, struct viewship_disk *d, uint64_t off, uint64_t end)
{
	int r = segment_open(vs);
	if (r >= 0)
		r = ferry_segment_writer_add_zero(vs->w, d->idx, off, end - off);
	if (r >= 0)
		r = pend_add(vs, d->idx, 1, off / BLOCK, (end - off) / BLOCK, NULL);
	vs->st->zeroed_bytes += end - off;
	return r < 0 ? r : segment_maybe_cut(vs);
}

/*
 * A range that reads as zeros in a full cycle. Nothing to ship for a target
 * that starts empty (the chain's first cycle); against fingerprints, ZERO
 * for the blocks that held data; without them, ZERO for all of it.
 */
static int full_zero(struct viewship *vs, struct viewship_disk *d, uint64_t off, uint64_t end,
		     int first)
{
	if (first)
		return 0;
	if (!d->compare)
		return add_zero(vs, d, off, end);
	struct ferry_fp fps[4096];
	for (uint64_t b = off / BLOCK; b < end / BLOCK;) {
		uint32_t k = (uint32_t)MIN((uint64_t)ARRAY_SIZE(fps), end / BLOCK - b);
		int r = fpfile_get(d->fp, b, k, fps);
		if (r < 0)
			return r;
		for (uint32_t i = 0; i < k;) {
			if (!fps[i].lo && !fps[i].hi) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < k && (fps[j].lo || fps[j].hi))
				j++;
			r = add_zero(vs, d, (b + i) * BLOCK, (b + j) * BLOCK);
			if (r < 0)
				return r;
			i = j;
		}
		b += k;
	}
	return 0;
}

static int on_extent(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata)
{
	struct reader *rd = userdata;
	struct viewship *vs = rd->vs;
	const struct viewship_params *p = vs->p;
	struct viewship_disk *d = rd->d;
	uint64_t end =
		MIN(DIV_ROUND_UP(off + len, BLOCK) * BLOCK, DIV_ROUND_UP(d->size, BLOCK) * BLOCK);
	int r;
	if (p->stop && *p->stop)
		return -EINTR;
	if (kind == NBDVIEW_SKIP)
		return d->full ? full_zero(vs, d, off, end, rd->first) : 0;
	if (kind == NBDVIEW_ZERO)
		return add_zero(vs, d, off, end);
	struct ferry_fp fps[READ_MAX / BLOCK], old[READ_MAX / BLOCK];
	while (len > 0) {
		size_t n = (size_t)MIN((uint64_t)READ_MAX, len);
		r = nbdview_read(rd->v, vs->buf, n, off);
		if (r < 0)
			return log_error_errno(r,
					       "VM %s: disk %s: NBD read at %" PRIu64 " failed: %s",
					       p->vm, d->name, off, nbdview_last_error(rd->v));
		vs->st->scanned_bytes += n;
		/* A run may end at a disk size that is not a multiple of 4 KiB:
		 * the record covers whole blocks, the tail reads as zeros. */
		uint32_t nb = (uint32_t)DIV_ROUND_UP(n, BLOCK);
		if ((size_t)nb * BLOCK > n)
			memset(vs->buf + n, 0, (size_t)nb * BLOCK - n);
		for (uint32_t i = 0; i < nb; i++)
			fpfile_block(vs->buf + (size_t)i * BLOCK, &fps[i]);
		if (d->compare) {
			r = fpfile_get(d->fp, off / BLOCK, nb, old);
			if (r < 0)
				return log_error_errno(r, "VM %s: disk %s: cannot read %s", p->vm,
						       d->name, d->fp_path);
		}
		/* Runs of blocks to ship: all of them, or after a lost bitmap
		 * those whose fingerprint differs from what was shipped. */
		for (uint32_t i = 0; i < nb;) {
			if (d->compare && fps[i].lo == old[i].lo && fps[i].hi == old[i].hi) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < nb &&
			       !(d->compare && fps[j].lo == old[j].lo && fps[j].hi == old[j].hi))
				j++;
			r = segment_open(vs);
			if (r >= 0)
				r = ferry_segment_writer_add_data(vs->w, d->idx,
								  off + (uint64_t)i * BLOCK,
								  vs->buf + (size_t)i * BLOCK,
								  (uint64_t)(j - i) * BLOCK);
			if (r >= 0)
				r = pend_add(vs, d->idx, 0, off / BLOCK + i, j - i, fps + i);
			if (r < 0)
				return log_error_errno(r,
						       "VM %s: cannot add data to segment %" PRIu64,
						       p->vm, vs->next_seq);
			vs->st->shipped_bytes += (uint64_t)(j - i) * BLOCK;
			r = segment_maybe_cut(vs);
			if (r < 0)
				return r;
			i = j;
		}
		off += n;
		len -= n;
	}
	return 0;
}

int viewship_read(struct viewship *vs, struct viewship_disk *d, const char *socket_path,
		  const char *export_name, const char *bitmap)
{
	const char *vm = vs->p->vm;
	struct reader rd = { vs, d, NULL, viewship_first_cycle(vs) };
	int r = nbdview_open(socket_path, export_name, d->full ? NULL : bitmap, &rd.v);
	if (r < 0)
		return log_error_errno(r, "VM %s: disk %s: cannot read the view over NBD: %s", vm,
				       d->name, nbdview_last_error(NULL));
	if (nbdview_size(rd.v) != d->size)
		r = log_error_errno(-EIO,
				    "VM %s: disk %s: the view has %" PRIu64
				    " bytes, the disk %" PRIu64,
				    vm, d->name, nbdview_size(rd.v), d->size);
	if (r >= 0)
		r = nbdview_extents(rd.v, 0, d->size, on_extent, &rd);
	nbdview_free(rd.v);
	return r;
}

/* ---- a cycle ---- */

int viewship_begin(struct viewship *vs, struct agent_scan_stats *st)
{
	vs->st = st;
	/* Whatever a failed cycle left in the open segment goes. */
	vs->declared = 0;
	vs->npend = vs->npfps = 0;
	int r = chain_position(vs);
	vs->first_seq = vs->next_seq;
	return r;
}

int viewship_first_cycle(const struct viewship *vs)
{
	return vs->first_seq == 1;
}

/* The disk's fingerprint file, for its size; decides whether a full
 * cycle of it can compare (fpfile.h). */
int viewship_open_fingerprints(struct viewship *vs, struct viewship_disk *d, const char *why_full)
{
	const char *vm = vs->p->vm;
	if (!d->fp || d->fp_size != d->size) {
		d->fp = fpfile_free(d->fp);
		int r = fpfile_open(d->fp_path, d->size, &d->fp);
		if (r < 0)
			return log_error_errno(r, "VM %s: disk %s: cannot open %s", vm, d->name,
					       d->fp_path);
		d->fp_size = d->size;
	}
	int baseline = fpfile_has_baseline(d->fp), due = fpfile_full_due(d->fp);
	/* The baseline also says that a full cycle of the disk completed: an
	 * agent killed in the first one reads it whole again, whatever bitmap
	 * it finds, or what it had not read yet would never be shipped. A
	 * resync's fingerprints (due) are compared with every block. */
	int lost = d->full;
	if (!baseline || due)
		d->full = 1;
	if (due) {
		log_info("VM %s: disk %s: resync: this cycle reads it whole and ships what differs "
			 "from the vault's image",
			 vm, d->name);
		d->compare = 1;
		return 0;
	}
	d->compare = d->full && baseline;
	if (d->full && vs->next_seq > 1)
		log_warning("VM %s: disk %s %s: this cycle reads it whole%s", vm, d->name,
			    lost ? why_full : "has no complete full cycle yet",
			    d->compare ? " and ships what differs from its fingerprints" :
					 " and ships all of it (no fingerprints to compare)");
	return 0;
}

int viewship_marker(struct viewship *vs, int consistency, int64_t marker_ns, uint64_t group_round)
{
	int r = segment_open(vs);
	if (r >= 0)
		r = group_round ? ferry_segment_writer_add_group_marker(
					  vs->w, (enum ferry_consistency)consistency, marker_ns,
					  group_round) :
				  ferry_segment_writer_add_marker(
					  vs->w, (enum ferry_consistency)consistency, marker_ns);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot add the marker to segment %" PRIu64,
				       vs->p->vm, vs->next_seq);
	return segment_put(vs);
}

void viewship_shipped(struct viewship *vs, struct viewship_disk *d)
{
	/* A full cycle, in the cache: every fingerprint now says what the
	 * chain holds. */
	if (!d->full || !d->fp || (fpfile_has_baseline(d->fp) && !fpfile_full_due(d->fp)))
		return;
	int r = fpfile_set_baseline(d->fp);
	if (r < 0)
		log_warning_errno(r, "VM %s: disk %s: cannot record the baseline in %s", vs->p->vm,
				  d->name, d->fp_path);
}

void viewship_resync(struct viewship *vs, uint64_t base_seq, const struct ferry_id *prev,
		     int adopted)
{
	vs->base_seq = base_seq;
	vs->base_prev = *prev;
	/* The files were replaced: open the new ones. */
	for (size_t i = 0; adopted && i < vs->p->ndisks; i++)
		vs->disks[i].fp = fpfile_free(vs->disks[i].fp);
}

/* ---- app-consistent cuts and the cycle's figures ---- */

void viewship_app_failed(struct viewship_app *a, const char *vm, int r, const char *fmt, ...)
{
	a->error = r < 0 ? -r : EIO;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
	va_end(ap);
	log_warning("VM %s: no app-consistent cut this cycle, the point is crash-consistent: %s",
		    vm, a->message);
}

void viewship_app_shipped(struct viewship_app *a, int shipped, int r, int64_t marker_ns)
{
	if (shipped) {
		a->error = 0;
		a->message[0] = 0;
		a->ok_ns = marker_ns;
	} else {
		a->error = r < 0 ? -r : EIO;
		snprintf(a->message, sizeof(a->message),
			 "the app-consistent cut was not shipped: %s", strerror(a->error));
	}
}

void viewship_end_stats(struct agent_scan_stats *st, const struct viewship_app *a,
			int64_t marker_ns)
{
	st->finished_ns = ferry_now_ns();
	st->marker_time_ns = marker_ns;
	st->app_error = a->error;
	st->app_attempt_ns = a->attempt_ns;
	st->app_ok_ns = a->ok_ns;
	snprintf(st->app_message, sizeof(st->app_message), "%s", a->message);
	st->cycle_shipped_bytes = st->shipped_bytes;
	st->cycle_segments = st->segments;
	st->total_shipped_bytes += st->shipped_bytes;
}

/* ---- setup ---- */

int viewship_new(const struct viewship_params *p, struct viewship **ret)
{
	if (p->ndisks == 0 || p->ndisks > UINT16_MAX)
		return -EINVAL;
	_cleanup_free_ struct viewship *vs = calloc(1, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	vs->p = p;
	vs->st = &vs->none;
	vs->disks = calloc(p->ndisks, sizeof(*vs->disks));
	vs->buf = malloc(READ_MAX + BLOCK);
	int r = vs->disks && vs->buf ? 0 : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < p->ndisks; i++) {
		struct viewship_disk *d = &vs->disks[i];
		d->name = p->disks[i].name;
		d->idx = (uint16_t)i;
		if (asprintf(&d->fp_path, "%s/%s.qfp", p->state_dir, d->name) < 0) {
			d->fp_path = NULL;
			r = -ENOMEM;
		}
	}
	if (r < 0) {
		viewship_free(TAKE_PTR(vs));
		return r;
	}
	*ret = TAKE_PTR(vs);
	return 0;
}

struct viewship *viewship_free(struct viewship *vs)
{
	if (!vs)
		return NULL;
	for (size_t i = 0; vs->disks && i < vs->p->ndisks; i++) {
		free(vs->disks[i].fp_path);
		fpfile_free(vs->disks[i].fp);
	}
	free(vs->disks);
	free(vs->pend);
	free(vs->pfps);
	free(vs->buf);
	ferry_segment_writer_free(vs->w);
	free(vs);
	return NULL;
}

struct viewship_disk *viewship_disk(struct viewship *vs, size_t i)
{
	return i < vs->p->ndisks ? &vs->disks[i] : NULL;
}
